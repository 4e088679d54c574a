"""Zero-shot classification with a text tower (Radford et al., 2021): each class is the mean of
its prompts' L2-normalised text embeddings ("a photo of a {}." for every template), normalised
again; an image is assigned the class whose embedding has the highest cosine similarity to its
image embedding. No labelled image is used."""

from __future__ import annotations

from typing import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor

from contrastkit._checks import check_embeddings
from contrastkit.errors import InputError


def zero_shot_classifier(encode_text: Callable[[list[str]], Tensor], class_names: Sequence[str],
                         templates: Sequence[str]) -> Tensor:
    """(K, D) unit-norm class embeddings: per class, the normalised mean of its normalised prompts'
    embeddings. ``encode_text`` maps a list of captions to (n, D) embeddings.

    Example:
        >>> import torch
        >>> table = {"a x.": [1.0, 0.0], "an x.": [1.0, 1.0], "a y.": [0.0, 1.0], "an y.": [0.0, 1.0]}
        >>> encode = lambda texts: torch.tensor([table[text] for text in texts])
        >>> zero_shot_classifier(encode, ["x", "y"], ["a {}.", "an {}."]).shape
        torch.Size([2, 2])
    """
    if not class_names or not templates:
        raise InputError("zero-shot classification needs at least one class name and one prompt template.")
    bad = [template for template in templates if template.count("{}") != 1]
    if bad:
        raise InputError(f"every prompt template needs exactly one {{}} for the class name, got {bad[0]!r}.")
    prompts = [template.format(name) for name in class_names for template in templates]
    embeddings = F.normalize(encode_text(prompts).float(), dim=1)
    per_class = embeddings.view(len(class_names), len(templates), -1).mean(dim=1)
    return F.normalize(per_class, dim=1)


def zero_shot_predict(image_embeddings: Tensor, classifier: Tensor) -> Tensor:
    """The class (row of ``classifier``) of highest cosine similarity for each image embedding.

    Example:
        >>> import torch
        >>> zero_shot_predict(torch.tensor([[2.0, 0.1], [0.0, -1.0]]), torch.eye(2))
        tensor([0, 0])
    """
    check_embeddings("image_embeddings", image_embeddings)
    check_embeddings("classifier", classifier)
    if image_embeddings.shape[1] != classifier.shape[1]:
        raise InputError(f"image embeddings have {image_embeddings.shape[1]} dims but the class embeddings "
                         f"{classifier.shape[1]}; both towers must project to the same width.")
    similarity = F.normalize(image_embeddings.float(), dim=1) @ classifier.float().to(image_embeddings.device).T
    return similarity.argmax(dim=1)
