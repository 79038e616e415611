"""`weitiao ui`: the browser workbench (ui.app), a layer beside the CLI and the Python API over the workflows."""
