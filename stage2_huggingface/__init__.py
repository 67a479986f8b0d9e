"""第二阶段模块三：Hugging Face 生态（pipeline、Trainer 微调、中文情感分析、GLUE、模型分享）。"""
