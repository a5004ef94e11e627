"""Training losses of the paper (Section 3.4, Eq. 7) and the classifiers they need.

    L = L_ID(v) + L_Tr(v) + 1/N * sum_g [L_ID(v_g) + L_Tr(v_g)]

``L_ID`` is cross entropy with label smoothing (targets (1 - eps) * one_hot + eps / K, Szegedy et al.,
the paper's [29]; torch's ``cross_entropy(label_smoothing=eps)``) on a BatchNorm + FC classifier,
``L_Tr`` the batch-hard triplet loss. Classifiers and losses live here, outside the network, so that the
exported model is exactly the feature extractor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from training.rafa import HeadOutput


def pairwise_euclidean(features: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B) Euclidean distances, clamped away from zero so sqrt has a finite gradient."""
    squared_norms = features.pow(2).sum(dim=1, keepdim=True)
    squared = squared_norms + squared_norms.t() - 2.0 * features @ features.t()
    return squared.clamp(min=1e-12).sqrt()


class BatchHardTripletLoss(nn.Module):
    """Triplet loss with batch-hard mining (Hermans et al., the paper's [8]) on Euclidean distance.

    For every anchor the farthest sample of its identity and the closest sample of another identity in
    the batch form the triplet; the loss is mean(max(0, d(a, p) - d(a, n) + margin)). Anchors without a
    positive (a lone tracklet of its identity) or without a negative are left out.

    Args:
        margin: 0.3, the value of the strong baseline the paper builds on ([23], Bag of Tricks), which
            uses un-normalised features as we do; the paper defers its own value to the supplementary.
            ``None`` gives the soft-margin variant log(1 + exp(d(a, p) - d(a, n))).
    """

    def __init__(self, margin: float | None = 0.3):
        super().__init__()
        self.margin = margin

    def hardest_pairs(self, features: torch.Tensor, labels: torch.Tensor):
        """Per anchor: (hardest positive distance, hardest negative distance, anchor is usable)."""
        distances = pairwise_euclidean(features)
        same = labels.unsqueeze(0) == labels.unsqueeze(1)
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        positives = same & ~eye
        negatives = ~same
        hardest_positive = distances.masked_fill(~positives, float("-inf")).amax(dim=1)
        hardest_negative = distances.masked_fill(~negatives, float("inf")).amin(dim=1)
        usable = positives.any(dim=1) & negatives.any(dim=1)
        return hardest_positive, hardest_negative, usable

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        hardest_positive, hardest_negative, usable = self.hardest_pairs(features, labels)
        if not usable.any():
            # Keep the graph connected (DDP needs every parameter to take part) but add nothing.
            return features.sum() * 0.0
        gap = hardest_positive[usable] - hardest_negative[usable]
        if self.margin is None:
            return F.softplus(gap).mean()
        return F.relu(gap + self.margin).mean()


class Classifier(nn.Module):
    """BatchNorm1d + bias-free Linear: the paper's "BN layer followed by an FC layer".

    The BN shift is frozen at zero as in the BNNeck of [23]: the triplet loss acts on the feature
    before BN and the ID loss on the normalised one, so the two losses do not pull the same
    embedding space in different directions. Retrieval uses the feature before BN (the model's v).
    """

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(in_features)
        self.norm.bias.requires_grad_(False)
        self.fc = nn.Linear(in_features, num_classes, bias=False)
        nn.init.normal_(self.fc.weight, std=0.001)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(features))


class ReIDCriterion(nn.Module):
    """Eq. 7: ID and triplet losses on v, plus their mean over the per-group features v_g.

    There is one classifier for v and one per v_g. The per-group terms are used only when the head
    has more than one group: for the baseline (no groups), SG-RAFA(S=1) and MG-RAFA(N=1) the single
    part *is* v, so Eq. 7 would merely count the same two losses twice. For SG-RAFA(S>1) each channel
    split has its own attention, and it gets its own losses like a granularity of MG-RAFA.

    Args:
        embedding_dim: dimension of v.
        part_dims: dimension of each v_g (empty for the baseline).
        num_classes: number of training identities.
        label_smoothing: the smoothing eps of the ID loss; 0.1 as in [23] and [29].
        triplet_margin: margin of :class:`BatchHardTripletLoss` (None: soft margin).
        id_weight: weight of every L_ID term (1 in Eq. 7).
        triplet_weight: weight of every L_Tr term (1 in Eq. 7).
        part_losses: False drops the 1/N sum (an ablation; the paper always uses it).
    """

    def __init__(
        self,
        embedding_dim: int,
        part_dims: Sequence[int],
        num_classes: int,
        label_smoothing: float = 0.1,
        triplet_margin: float | None = 0.3,
        id_weight: float = 1.0,
        triplet_weight: float = 1.0,
        part_losses: bool = True,
    ):
        super().__init__()
        self.id_loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.triplet_loss = BatchHardTripletLoss(triplet_margin)
        self.id_weight = id_weight
        self.triplet_weight = triplet_weight
        self.classifier = Classifier(embedding_dim, num_classes)
        self.uses_parts = part_losses and len(part_dims) > 1
        self.part_classifiers = nn.ModuleList(
            Classifier(dim, num_classes) for dim in (part_dims if self.uses_parts else ())
        )

    def feature_losses(self, classifier: Classifier, features: torch.Tensor, labels: torch.Tensor):
        """(L_ID, L_Tr, logits) of one feature."""
        logits = classifier(features)
        return self.id_loss(logits, labels), self.triplet_loss(features.float(), labels), logits

    def forward(self, output: HeadOutput, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its terms (detached) for logging: id, triplet, part_id, part_triplet, accuracy."""
        id_loss, triplet_loss, logits = self.feature_losses(self.classifier, output.embedding, labels)
        total = self.id_weight * id_loss + self.triplet_weight * triplet_loss
        terms = {"id": id_loss.detach(), "triplet": triplet_loss.detach()}
        if self.uses_parts:
            if len(output.parts) != len(self.part_classifiers):
                raise ValueError(
                    f"head gave {len(output.parts)} parts, the criterion expects {len(self.part_classifiers)}"
                )
            part_id = part_triplet = 0.0
            for classifier, part in zip(self.part_classifiers, output.parts, strict=True):
                part_id_loss, part_triplet_loss, _ = self.feature_losses(classifier, part, labels)
                part_id = part_id + part_id_loss
                part_triplet = part_triplet + part_triplet_loss
            num_parts = len(output.parts)
            part_id, part_triplet = part_id / num_parts, part_triplet / num_parts
            total = total + self.id_weight * part_id + self.triplet_weight * part_triplet
            terms["part_id"] = part_id.detach()
            terms["part_triplet"] = part_triplet.detach()
        terms["accuracy"] = (logits.argmax(dim=1) == labels).float().mean().detach()
        terms["total"] = total.detach()
        return total, terms
