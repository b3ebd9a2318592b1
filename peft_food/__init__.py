"""peft_food: full or LoRA fine-tuning of Vision Transformers on Food-101, configured by Hydra."""

__version__ = "0.1.0"
