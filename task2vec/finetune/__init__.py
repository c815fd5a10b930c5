"""Stage 4, fine-tuning: the trainer and its run folder, augmentation, multi-task heads, metrics,
Grad-CAM."""
