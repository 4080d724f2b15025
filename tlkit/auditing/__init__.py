"""Auditing a data set before training (named `auditing` so that it never shadows the API function `tlkit.audit`): unreadable images, exact and near duplicates, train/val leaks,
likely label errors, outliers and class balance, from one pass of the frozen base through the feature store."""
