"""HOG targets: shapes at several resolutions, the MaskFeat layout, fp32 under autocast, a hand case."""

import pytest
import torch

from maetok.models.hog import HOGGenerator


@pytest.mark.parametrize(
    "size, patch, cell, num_tokens",
    [(32, 4, 2, 64), (32, 16, 8, 4), (256, 16, 8, 256), (512, 16, 8, 1024)],
)
def test_shape_at_any_resolution(size, patch, cell, num_tokens):
    torch.manual_seed(0)
    hog = HOGGenerator(patch_size=patch, cell_size=cell)
    y = hog(torch.rand(2, 3, size, size) * 2 - 1)
    assert y.shape == (2, num_tokens, 108) and hog.dim == 108
    assert y.dtype == torch.float32 and torch.isfinite(y).all()


def test_cells_are_l2_normalised_over_bins():
    torch.manual_seed(0)
    y = HOGGenerator(patch_size=16, cell_size=8)(torch.rand(1, 3, 32, 32))  # (1, 4, 108)
    per_cell = y.reshape(1, 4, 3, 9, 4)  # (B, N, channel, bin, cell)
    torch.testing.assert_close(per_cell.norm(dim=3), torch.ones(1, 4, 3, 4))


def _edge_image(vertical):
    """32 x 32, zero except channel 1, which steps from 0 to 1 at x = 4 (vertical edge) or y = 4."""
    x = torch.zeros(1, 3, 32, 32)
    if vertical:
        x[:, 1, :, 4:] = 1.0
    else:
        x[:, 1, 4:, :] = 1.0
    return x


def test_vertical_edge_lands_in_horizontal_gradient_bin_and_layout():
    # Patch 16, cell 8: a patch has 2 x 2 cells; index = (c * 9 + bin) * 4 + cell_row * 2 + cell_col.
    y = HOGGenerator(patch_size=16, cell_size=8)(_edge_image(vertical=True))[0]  # (4 patches, 108)
    # The edge (x = 3..4) lies in cell column 0 of the left patches 0 and 2, for both cell rows.
    # A pure horizontal gradient has atan2(gx, 0) = +-pi/2 -> bin 9 / 2 -> 4 (MaskFeat convention).
    expected = torch.zeros(4, 108)
    for patch in (0, 2):
        for cell_row in (0, 1):
            expected[patch, (1 * 9 + 4) * 4 + cell_row * 2 + 0] = 1.0
    torch.testing.assert_close(y, expected)


def test_horizontal_edge_lands_in_bin_zero():
    y = HOGGenerator(patch_size=16, cell_size=8)(_edge_image(vertical=False))[0]
    expected = torch.zeros(4, 108)
    for patch in (0, 1):  # the top patches, cell row 0, both cell columns
        for cell_col in (0, 1):
            expected[patch, (1 * 9 + 0) * 4 + 0 * 2 + cell_col] = 1.0
    torch.testing.assert_close(y, expected)


def test_layout_matches_official_unfold():
    """`to_patches` equals the official _reshape (flatten, permute, two unfolds) on random cells."""
    torch.manual_seed(0)
    hog = HOGGenerator(patch_size=16, cell_size=8)
    hist = torch.rand(2, 3, 9, 32, 32)  # 512 px: 32 x 32 cells, 16 x 16 patches of 2 x 2 cells
    k = 2
    ref = hist.flatten(1, 2).permute(0, 2, 3, 1)
    ref = ref.unfold(1, k, k).unfold(2, k, k).flatten(1, 2).flatten(2)
    torch.testing.assert_close(hog.to_patches(hist), ref)


def test_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    hog = HOGGenerator(patch_size=16, cell_size=8)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    ref = hog(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = hog(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    xb = x.bfloat16()
    torch.testing.assert_close(hog(xb), hog(xb.float()), rtol=0, atol=0)


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="30x30.*patch size 16"):
        HOGGenerator(patch_size=16)(torch.rand(1, 3, 30, 30))
    with pytest.raises(ValueError, match="cell_size"):
        HOGGenerator(patch_size=16, cell_size=6)
