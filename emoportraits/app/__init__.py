"""The Gradio demo app (``python app.py``): reenactment, speech and pose-generation tabs.

``app.py`` at the repository root only parses arguments and calls ``emoportraits.app.ui.main``; the
logic lives here: ``loading`` (the model bundle), ``examples`` (example media made at start-up),
``handlers`` (the event functions: validation, limits, one-line errors) and ``ui`` (the Blocks
layout). Gradio is imported only by ``ui`` and ``handlers``.
"""
