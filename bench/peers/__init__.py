"""The peers Mailqueue is measured against: django-post_office, a bare DRF app, raw smtplib."""
