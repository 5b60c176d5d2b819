"""What diffusers and transformers print: hidden in the SDK's commands unless ``--verbose``.

Loading SD 2.1 makes both libraries log (deprecation notes, "Loading pipeline components" and
checkpoint-shard progress bars) on top of the SDK's own progress. The commands call
:func:`set_library_verbosity` once, at start-up, after parsing; downloads keep the hub's
progress bars either way (transformers' switch would hide them too, so they are switched back).
"""

from __future__ import annotations

__all__ = ["set_library_verbosity"]


def set_library_verbosity(verbose: bool) -> None:
    """diffusers/transformers: info logs and progress bars with ``verbose``, else errors only and no bars."""
    import diffusers
    import transformers
    from huggingface_hub.utils import enable_progress_bars

    for library in (diffusers, transformers):
        logging = library.utils.logging
        if verbose:
            logging.set_verbosity_info()
            logging.enable_progress_bar()
        else:
            logging.set_verbosity_error()
            logging.disable_progress_bar()
    enable_progress_bars()  # downloads show the hub's bars (transformers' switch turns them off)
