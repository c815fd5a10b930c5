"""Backbones: networks with their weights and preprocessing (timm/torchvision, local files, offline
fail-fast), what a fine-tune starts from, and their ImageNet quality."""
