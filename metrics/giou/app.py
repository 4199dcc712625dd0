import evaluate
from evaluate.utils import launch_gradio_widget

module = evaluate.load("giou")
launch_gradio_widget(module)
