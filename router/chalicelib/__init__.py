"""The router's logic: routing rules (`rules`), SNS adapter (`publisher`), stage (`service`)."""
