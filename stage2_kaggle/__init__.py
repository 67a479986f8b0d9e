"""第二阶段模块四：Kaggle 比赛工具箱（Tweet Sentiment Extraction、CommonLit、数据清洗、模型融合、伪标签）。"""
