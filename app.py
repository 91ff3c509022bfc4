"""EMOPortraits demo app (a Hugging Face Space): `python app.py [--model DIR_OR_REPO]`.

The app itself lives in ``emoportraits.app``; see ``python app.py --help``.
"""
import sys

from emoportraits.app.ui import main

if __name__ == "__main__":
    sys.exit(main())
