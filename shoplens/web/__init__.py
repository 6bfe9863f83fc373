"""The web app (Gradio): search by photo, browse by category, share a link."""

import os

# Before gradio is imported anywhere: no usage analytics, no version check calls home.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
