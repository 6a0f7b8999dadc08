"""The synthetic data generator: people with CRM records (people) and their CDP visits (visitors)."""
