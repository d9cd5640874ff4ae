"""The cleanse stage: validate and normalise raw records, send good ones to the clean queue."""
