"""``python -m ndc.cli``: the ``ndc`` command without its console script (e.g. from a copied package)."""

from ndc.cli import main

if __name__ == "__main__":
    main(prog_name="ndc")
