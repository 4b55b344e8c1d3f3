"""Student starts: a layer-pruned copy keeps the chosen layers exactly and still saves and reloads."""
import pytest
import torch

from distill.students import prune_layers
from tests.tiny_models import build_tiny_sentence_encoder


def test_pruned_copy_keeps_the_chosen_layers_and_round_trips(tmp_path):
    from sentence_transformers import SentenceTransformer

    folder = build_tiny_sentence_encoder(tmp_path / "teacher", layers=4)
    full = SentenceTransformer(str(folder), device="cpu")
    kept = [full[0].auto_model.encoder.layer[i].state_dict() for i in (0, 3)]
    pruned = prune_layers(SentenceTransformer(str(folder), device="cpu"), (0, 3))
    layers = pruned[0].auto_model.encoder.layer
    assert len(layers) == 2 and pruned[0].auto_model.config.num_hidden_layers == 2
    for layer, original in zip(layers, kept):
        assert all(torch.equal(layer.state_dict()[k], v) for k, v in original.items())

    pruned.save(str(tmp_path / "student"))
    reloaded = SentenceTransformer(str(tmp_path / "student"), device="cpu")
    assert len(reloaded[0].auto_model.encoder.layer) == 2
    text = ["how do i cancel my subscription"]
    assert torch.allclose(torch.tensor(reloaded.encode(text)), torch.tensor(pruned.encode(text)), atol=1e-5)
    assert not torch.allclose(torch.tensor(full.encode(text)), torch.tensor(pruned.encode(text)), atol=1e-3)


@pytest.mark.parametrize("keep", [(), (2, 1), (0, 4)])
def test_bad_layer_choices_are_refused(tmp_path, keep):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(build_tiny_sentence_encoder(tmp_path / "t", layers=4)), device="cpu")
    with pytest.raises(ValueError, match="keep_layers"):
        prune_layers(model, keep)
