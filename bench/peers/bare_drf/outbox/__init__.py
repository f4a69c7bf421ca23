"""One model and one view: the least a Django + DRF email-accepting endpoint can do."""
