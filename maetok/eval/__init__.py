"""Evaluation: reconstruction (rFID, PSNR, SSIM) and generation (gFID, IS, precision, recall)."""
