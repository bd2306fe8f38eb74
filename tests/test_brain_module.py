"""The brain module: sensor positions, shapes with EEG and MEG, size, losses."""

from __future__ import annotations

import mne
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from neurocast.models.nets.brain_module import (  # noqa: E402
    BrainModule,
    BrainModuleConfig,
    CombinedLoss,
    RetrievalHead,
    SpatialAttention,
    clip_loss,
    sensor_positions_2d,
    small_config,
)
from neurocast.streaming.sources.simulator.geometry import default_info, template_montage  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def _muse_info() -> mne.Info:
    info = mne.create_info(["TP9", "AF7", "AF8", "TP10"], 256.0, "eeg")
    info.set_montage(template_montage())
    return info


@pytest.mark.parametrize("modality", ["eeg", "meg", "both"])
def test_positions_of_simulated_sensors(modality: str) -> None:
    info = default_info(1000.0, modality)
    pos = sensor_positions_2d(info)
    assert pos.shape == (len(info["ch_names"]), 2)
    assert pos.min() == 0.0 and pos.max() == 1.0
    # every sensor gets its own position, also the three sensors of a MEG site
    assert len(np.unique(pos.round(5), axis=0)) == len(pos)


def test_positions_from_layout_and_projection_agree_on_left_right() -> None:
    pos = sensor_positions_2d(_muse_info())
    x = dict(zip(["TP9", "AF7", "AF8", "TP10"], pos[:, 0], strict=True))
    assert x["TP9"] < x["TP10"] and x["AF7"] < x["AF8"]
    meg = default_info(1000.0, "meg")
    p = sensor_positions_2d(meg)
    assert np.all((p >= 0) & (p <= 1))


def test_positions_need_locations() -> None:
    info = mne.create_info(["TP9", "AF7", "Right AUX"], 256.0, ["eeg", "eeg", "misc"])
    with pytest.raises(ValueError, match=r"Right AUX.*set a\s+montage"):
        sensor_positions_2d(info)


@pytest.mark.parametrize("modality", ["eeg", "meg"])
def test_shapes_with_eeg_and_meg(modality: str) -> None:
    info = _muse_info() if modality == "eeg" else default_info(1000.0, "meg")
    n_ch = len(info["ch_names"])
    module = BrainModule(sensor_positions_2d(info), n_times=12, out_dim=16, config=small_config(2))
    x = torch.randn(5, n_ch, 12)
    clip_out, mse_out = module(x, torch.tensor([0, 1, 0, 1, 1]))
    assert clip_out.shape == mse_out.shape == (5, 16)
    assert torch.isfinite(clip_out).all()
    with pytest.raises(ValueError, match=f"shape \\(batch, {n_ch}, 12\\)"):
        module(torch.randn(2, n_ch, 13))
    head = RetrievalHead(module, subject=1, n_context=24)
    emb = head(torch.randn(3, n_ch, 36))
    assert emb.shape == (3, 16)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    with pytest.raises(ValueError, match="subject"):
        RetrievalHead(module, subject=2)


def test_parameter_count_at_paper_defaults() -> None:
    # THINGS-MEG: 272 CTF sensors, 4 subjects, 768-dimensional image latents, 181 samples
    pos = np.random.default_rng(0).uniform(size=(272, 2))
    module = BrainModule(pos, n_times=181, out_dim=768, config=BrainModuleConfig(n_subjects=4))
    assert 5.8e6 < module.n_parameters() < 7.0e6
    cfg = module.config
    assert (cfg.n_spatial, cfg.hidden, cfg.n_blocks, cfg.kernel_size) == (270, 320, 5, 3)


def test_spatial_dropout_only_in_training() -> None:
    pos = np.random.default_rng(1).uniform(size=(40, 2))
    att = SpatialAttention(pos, n_out=8, n_freqs=4, dropout_radius=0.3)
    att.eval()
    w_eval = att.weights()
    torch.testing.assert_close(w_eval.sum(dim=1), torch.ones(8))
    assert (w_eval > 0).all()
    torch.testing.assert_close(att.weights(), w_eval)
    att.train()
    torch.manual_seed(0)
    dropped = [(att.weights() == 0).all(dim=0).sum().item() for _ in range(20)]
    assert max(dropped) > 0  # some sensors removed in some batches
    assert all(d < 40 for d in dropped)  # never all of them


def test_clip_loss_prefers_matched_pairs() -> None:
    gen = torch.Generator().manual_seed(0)
    targets = torch.nn.functional.normalize(torch.randn(16, 32, generator=gen), dim=-1)
    noisy = targets + 0.1 * torch.randn(16, 32, generator=gen)
    matched = clip_loss(noisy, targets)
    shuffled = clip_loss(noisy, targets[torch.randperm(16, generator=gen)])
    assert matched < 0.5 * shuffled
    # with labels: several predictions of the same image in one batch
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    assert clip_loss(targets[labels], targets[:3], 20.0, labels) < clip_loss(
        targets[labels], targets[:3], 20.0, torch.tensor([1, 2, 0, 0, 1, 0])
    )
    with pytest.raises(ValueError, match="one row per prediction"):
        clip_loss(noisy, targets[:3])
    with pytest.raises(ValueError, match="must be"):
        clip_loss(noisy, targets[:, :5])


def test_combined_loss_trains_both_heads() -> None:
    torch.manual_seed(0)
    pos = np.random.default_rng(2).uniform(size=(10, 2))
    module = BrainModule(pos, n_times=8, out_dim=6, config=small_config(spatial_dropout=0.0))
    x = torch.randn(12, 10, 8)
    labels = torch.arange(12) % 4
    candidates = torch.nn.functional.normalize(torch.randn(4, 6), dim=-1)
    loss_fn = CombinedLoss(clip_weight=0.5)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        loss = loss_fn(module, module(x), candidates, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    assert set(loss_fn.last) == {"clip", "mse"}
    with pytest.raises(ValueError, match="λ"):
        CombinedLoss(clip_weight=1.5)


def test_bad_configs() -> None:
    with pytest.raises(ValueError, match="odd"):
        BrainModuleConfig(kernel_size=4)
    with pytest.raises(ValueError, match="spatial_dropout"):
        BrainModuleConfig(spatial_dropout=1.0)
    with pytest.raises(ValueError, match="positions"):
        BrainModule(np.zeros((3, 3)), 10, 4)
