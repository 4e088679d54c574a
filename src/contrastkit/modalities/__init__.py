"""The kinds of data a run trains on, each one registered unit (:class:`Modality`): which datasets it
claims and how it loads them, its encoder, views, loader, evaluation, recipes and options.

The application (:mod:`contrastkit.runs`, :mod:`contrastkit.config`, :mod:`contrastkit.cli`) asks
this registry and never branches on the kind of data. Units are tried in the order registered here
(a caption table is image-text before it is a text file); images, the catch-all, take any name no other
unit claims.
"""

from contrastkit.modalities.base import (MODALITIES, Built, BuiltRun, Modality, Splits, Views, format_results,
                                         probe_results, register_modality, resolve_modality)
# audio claims only fsdd and audio:PATH, which the text unit would otherwise take for a CSV file.
from contrastkit.modalities.audio import AudioModality
from contrastkit.modalities.image import ImageModality
from contrastkit.modalities.image_text import ImageTextModality
from contrastkit.modalities.text import TextModality
from contrastkit.modalities.series import SeriesModality
from contrastkit.modalities.interactions import InteractionsModality
from contrastkit.modalities.frames import FramesModality

__all__ = ["MODALITIES", "AudioModality", "Built", "BuiltRun", "FramesModality", "ImageModality", "ImageTextModality",
           "InteractionsModality", "Modality", "SeriesModality", "Splits", "TextModality", "Views", "format_results",
           "probe_results", "register_modality", "resolve_modality"]
