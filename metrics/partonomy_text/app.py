import evaluate
from evaluate.utils import launch_gradio_widget

module = evaluate.load("partonomy_text")
launch_gradio_widget(module)
