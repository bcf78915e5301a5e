"""Shared test setup: everything runs offline (no model hub, no dataset host)."""
import os

# Set before any test module imports transformers / huggingface_hub, which read these at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
