"""The losses of Eq. 7 against values worked out by hand on tiny tensors."""

import math

import pytest
import torch

from training.losses import (
    BatchHardTripletLoss,
    Classifier,
    ReIDCriterion,
    pairwise_euclidean,
)
from training.rafa import HeadOutput


def test_pairwise_euclidean_matches_hand_distances():
    points = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    expected = torch.tensor([[0.0, 5.0, 10.0], [5.0, 0.0, 5.0], [10.0, 5.0, 0.0]])
    assert torch.allclose(pairwise_euclidean(points), expected, atol=1e-5)


def test_batch_hard_triplet_picks_the_hardest_positive_and_negative():
    # 1-D points; identity 0 at 0, 1, 6 and identity 1 at 2, 9.
    features = torch.tensor([[0.0], [1.0], [6.0], [2.0], [9.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    loss = BatchHardTripletLoss(margin=0.3)
    positive, negative, usable = loss.hardest_pairs(features, labels)
    assert torch.allclose(positive, torch.tensor([6.0, 5.0, 6.0, 7.0, 7.0]), atol=1e-5)
    assert torch.allclose(negative, torch.tensor([2.0, 1.0, 3.0, 1.0, 3.0]), atol=1e-5)
    assert usable.all()
    # Per anchor: 6-2+.3, 5-1+.3, 6-3+.3, 7-1+.3, 7-3+.3 -> mean 4.5
    assert loss(features, labels).item() == pytest.approx(4.5, abs=1e-5)


def test_batch_hard_triplet_is_zero_when_margin_is_met_and_skips_lone_anchors():
    features = torch.tensor([[0.0], [1.0], [3.0], [5.0], [50.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])  # identity 2 has no positive: left out
    loss = BatchHardTripletLoss(margin=0.3)
    # Anchors 0, 1, 3 meet the margin; anchor 2: positive 2, negative 2 -> 0.3. Mean over 4 anchors.
    assert loss(features, labels).item() == pytest.approx(0.3 / 4, abs=1e-5)
    soft = BatchHardTripletLoss(margin=None)(features, labels).item()
    expected_soft = sum(math.log1p(math.exp(gap)) for gap in (1 - 3, 1 - 2, 2 - 2, 2 - 4)) / 4
    assert soft == pytest.approx(expected_soft, abs=1e-5)


def test_batch_hard_triplet_gradient_pulls_positive_in_and_pushes_negative_out():
    features = torch.tensor([[0.0], [4.0], [3.0], [5.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    BatchHardTripletLoss(0.3)(features, labels).backward()
    # Point 1 (identity 0 at 4) sits among identity 1: it must move towards 0, i.e. a positive gradient.
    assert features.grad[1, 0] > 0


def test_label_smoothing_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    labels = torch.tensor([0, 2])
    epsilon, classes = 0.1, 3
    expected = 0.0
    for row, label in zip(logits.tolist(), labels.tolist(), strict=True):
        log_norm = math.log(sum(math.exp(z) for z in row))
        for k, z in enumerate(row):
            target = (1 - epsilon) * (k == label) + epsilon / classes
            expected -= target * (z - log_norm)
    expected /= len(labels)
    # The criterion's ID loss (Eq. 7's L_ID) is exactly this formula.
    id_loss = ReIDCriterion(4, [], num_classes=classes, label_smoothing=epsilon).id_loss
    assert id_loss(logits, labels).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.3547, abs=1e-4)  # worked out once by hand, so the loop is checked too
    # epsilon=0 is plain cross entropy: -log softmax at the label.
    plain = ReIDCriterion(4, [], num_classes=classes, label_smoothing=0.0).id_loss(logits, labels).item()
    expected_plain = -(2 - math.log(math.exp(2) + 2) + 3 - math.log(1 + math.e + math.exp(3))) / 2
    assert plain == pytest.approx(expected_plain, abs=1e-6)


def test_classifier_is_bn_then_bias_free_linear_with_frozen_shift():
    classifier = Classifier(4, 3)
    assert classifier.fc.bias is None
    assert not classifier.norm.bias.requires_grad
    assert classifier.norm.weight.requires_grad
    classifier.eval()
    features = torch.randn(5, 4)
    expected = classifier.fc(classifier.norm(features))
    assert torch.equal(classifier(features), expected)


def make_output(batch: int, dims: list[int], seed: int = 0) -> HeadOutput:
    generator = torch.Generator().manual_seed(seed)
    parts = tuple(torch.randn(batch, dim, generator=generator) for dim in dims)
    return HeadOutput(torch.cat(parts, dim=1), parts if len(parts) > 1 else (), None)


def test_eq7_total_is_the_sum_of_its_terms_with_one_over_n():
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    output = make_output(6, [3, 3, 2, 2])  # N = 4 groups of unequal size are fine
    criterion = ReIDCriterion(10, [3, 3, 2, 2], num_classes=3, label_smoothing=0.1, triplet_margin=0.3)
    criterion.train()
    total, terms = criterion(output, labels)

    id_loss = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    triplet = BatchHardTripletLoss(0.3)
    # Fresh BN in train mode is deterministic given the batch, so the terms can be recomputed.
    expected_v = id_loss(criterion.classifier(output.embedding), labels) + triplet(output.embedding, labels)
    expected_parts = sum(
        id_loss(classifier(part), labels) + triplet(part, labels)
        for classifier, part in zip(criterion.part_classifiers, output.parts, strict=True)
    )
    expected = expected_v + expected_parts / 4
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    summed = terms["id"] + terms["triplet"] + terms["part_id"] + terms["part_triplet"]
    assert total.item() == pytest.approx(summed.item(), rel=1e-6)
    assert terms["total"].item() == pytest.approx(total.item())
    assert 0.0 <= terms["accuracy"].item() <= 1.0


def test_eq7_has_no_part_terms_for_a_single_group_or_the_baseline():
    labels = torch.tensor([0, 0, 1, 1])
    for dims, parts in (([8], []), ([8], [8])):
        criterion = ReIDCriterion(8, parts, num_classes=2)
        output = make_output(4, dims)
        total, terms = criterion(output, labels)
        assert len(criterion.part_classifiers) == 0
        assert "part_id" not in terms
        assert total.item() == pytest.approx((terms["id"] + terms["triplet"]).item(), rel=1e-6)


def test_eq7_weights_and_disabling_part_losses():
    labels = torch.tensor([0, 0, 1, 1])
    output = make_output(4, [2, 2])
    off = ReIDCriterion(4, [2, 2], num_classes=2, part_losses=False)
    assert len(off.part_classifiers) == 0 and "part_id" not in off(output, labels)[1]
    weighted = ReIDCriterion(4, [2, 2], num_classes=2, id_weight=2.0, triplet_weight=0.5)
    total, terms = weighted(output, labels)
    expected = 2.0 * (terms["id"] + terms["part_id"]) + 0.5 * (terms["triplet"] + terms["part_triplet"])
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
