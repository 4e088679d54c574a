"""Images with captions: a caption table (.csv / .tsv naming an image column) or a labelled image
dataset captioned from its class names; an image tower and a text tower (CLIP, SigLIP); one image
view and one drawn caption per pair; zero-shot classification or retrieval beside the probes.

Images are read, sized and viewed as by :mod:`contrastkit.modalities.image`, whose recipes apply.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from contrastkit.augment import ImageTextViews
from contrastkit.config import Config
from contrastkit.data import CaptionedLoader, ImageTextSplits, load_image_text_dataset
from contrastkit.data.device_loader import BatchLoader
from contrastkit.data.image_text import is_caption_table
from contrastkit.evaluate import (classification_metrics, extract_features, extract_text_features, retrieval_recall,
                                  zero_shot_classifier, zero_shot_predict)
from contrastkit.methods import Method
from contrastkit.modalities.base import Built, BuiltRun, Modality, format_results, probe_results, register_modality
from contrastkit.modalities.image import ImageModality

# Captions whose locked-tower features are cached for training (384 floats each for MiniLM: 300 MB
# at the limit); a larger caption table is tokenized and encoded at every step instead.
TEXT_CACHE_LIMIT = 200_000
# Retrieval on a caption table without test rows is scored on this many of its training pairs.
RETRIEVAL_TRAIN_PAIRS = 1000


class ImageTextModality(ImageModality):
    """Image-caption pairs, trained by two towers on one image view and one caption per pair."""

    name = "image_text"
    catch_all = False
    streams_from_files = False  # captioned images are held in memory
    find_unused_parameters = True  # a transformer may hold layers its sentence embedding does not use
    default_options = {"caption_templates": None}
    option_descriptions = {"caption_templates": (
        "runs on a labelled image dataset: a .txt file of prompt templates, one per line with {} for the class name "
        "(captions and zero-shot prompts); unset: built-in ones")}
    renamed_keys = {"caption_templates": "caption_templates"}

    def claims(self, dataset: str) -> bool:
        return is_caption_table(dataset)

    def adopts(self, dataset: str, claimed_by: Modality) -> bool:
        # A labelled image dataset is captioned from its class names.
        return type(claimed_by) is ImageModality

    def datasets(self) -> list[str]:
        return ["<any labelled image dataset, captioned from its class names>",
                "<path to a .csv/.tsv with image and caption columns>"]

    def list_entries(self) -> dict[str, list[str]]:
        return {}

    def recipe_key(self, config: Config) -> str:
        return self.name

    def build(self, config: Config, method_class: type[Method], splits: ImageTextSplits | None,
              device: torch.device) -> Built:
        self.check_backbone(config)
        options = self.options(config.modality_options.get(self.name))
        splits = splits or load_image_text_dataset(config.dataset, root=config.data_root, image_size=config.image_size,
                                                   templates=options["caption_templates"])
        method = self.image_method(config, method_class, splits, device)
        views, preset_name = self.views(config, splits)
        tokenize = method.text_tower.tokenize
        if method.text_tower.encoder in method.locked and len(splits.captions) <= TEXT_CACHE_LIMIT:
            # A locked text tower gives each caption the same features at every step: encode them
            # once, and train without the tokenizer and the text encoder in the step.
            method.cache_text_features(splits.captions)
            tokenize = None
        augment = ImageTextViews(method.configure_views(views), splits.captions, tokenize).to(device)
        return Built(splits, method, augment, preset_name)

    def loader(self, run: BuiltRun) -> BatchLoader:
        splits, config = run.splits, run.config
        return CaptionedLoader(splits.train.images, splits.train_captions, splits.train.labels, config.batch_size,
                               device=run.device, seed=config.seed)

    def evaluate(self, run: BuiltRun, protocols: Sequence[str]) -> dict[str, Any]:
        results = probe_results(self, run, protocols)
        pairs = image_text_results(run)
        lines = [format_results(results, protocols, self.raw_name)] if results else []
        lines += [f"{key:<28}{value:>9.4f}" for key, value in pairs.items()]
        if lines:
            print("\n".join(lines), flush=True)
        return {**results, **pairs}

    def can_plot_embedding(self, run: BuiltRun) -> bool:
        return run.splits.test is not None and bool(run.splits.classes)


def image_text_results(run: BuiltRun) -> dict[str, float]:
    """Zero-shot top-1 / macro-F1 on the test split of class-captioned data (prompts from the
    templates); image-to-text and text-to-image recall@1/5/10 on a caption table's test pairs
    (``train_`` keys: its first training pairs, when it has no test rows)."""
    splits: ImageTextSplits = run.splits
    method, device = run.method, run.device

    def embed_images(images: Tensor) -> Tensor:
        return extract_features(method.image_tower, images, run.augment.eval_view, device=device,
                                channels_last=run.config.channels_last)

    def embed_texts(texts: list[str]) -> Tensor:
        return extract_text_features(method.text_tower, texts, device=device)

    if splits.captions_per_class:
        classifier = zero_shot_classifier(embed_texts, splits.prompt_names, splits.templates)
        predicted = zero_shot_predict(embed_images(splits.test.images), classifier)
        metrics = classification_metrics(splits.test.labels, predicted, num_classes=len(splits.classes))
        return {"zero_shot_top1": round(metrics["top1"], 4), "zero_shot_f1": round(metrics["f1"], 4)}
    prefix, images, ids = "", splits.test.images if splits.test is not None else None, splits.test_captions
    if images is None:
        prefix = "train_"
        images, ids = splits.train.images[:RETRIEVAL_TRAIN_PAIRS], splits.train_captions[:RETRIEVAL_TRAIN_PAIRS]
    caption_ids = ids[:, 0]
    captions = [splits.captions[index] for index in caption_ids.tolist()]
    # A table's equal captions share one id, and training counts pairs sharing a caption as
    # positives of each other: so do the scores, else each tied copy would count as a miss.
    recall = retrieval_recall(embed_images(images), embed_texts(captions), group_ids=caption_ids)
    names = {"q2k": "image_to_text", "k2q": "text_to_image"}
    return {f"{prefix}{names[key[:3]]}{key[3:]}": round(value, 4) for key, value in recall.items()}


IMAGE_TEXT = register_modality(ImageTextModality())
