"""Training, needs torch: the toolkit fine-tuning and trimming share, `finetune`, `trim`, and the Whisper
teacher."""
