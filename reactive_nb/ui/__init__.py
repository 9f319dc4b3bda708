"""The top layer: widgets, IPython magics, the command line and the demo."""
