"""The shoplens web app: python app.py [--index DIR | --qdrant-url URL] [--catalog DIR] [--host H] [--port P] [--share]."""

import sys

from shoplens.web.serve import main

if __name__ == "__main__":
    sys.exit(main())
