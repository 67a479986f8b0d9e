"""第二阶段模块二：从零实现 Transformer（注意力、位置编码、编码器-解码器、BERT 与 GPT）。"""
