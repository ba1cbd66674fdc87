"""Base and adapted models: finding a model without a network (resolve), loading it safely (loading), the
encoder-decoder made of two checkpoints (encoder_decoder), the mean-pooling classifier (mean_pooling) and the
fix peft needs for prefix tuning (peft_compat)."""
