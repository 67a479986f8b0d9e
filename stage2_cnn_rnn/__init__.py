"""第二阶段模块一：CNN 与 RNN（卷积、池化、LeNet、ResNet、RNN、LSTM/GRU、Seq2Seq、TextCNN）。"""
