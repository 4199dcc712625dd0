"""What `make demo` and the Gradio app (`app.py`) show: masks drawn on images with their labels and IoUs, and the
learning curve."""
