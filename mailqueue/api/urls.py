"""/api/v1/ routes: one path, one view."""

from django.urls import include, path

from client_webhooks import api as webhook_views
from mailqueue.api import failed as failed_views
from mailqueue.api import queues as queue_views
from mailqueue.api import sender_domains as sender_domain_views
from mailqueue.api import suppressions as suppression_views
from mailqueue.api import views
from templates_app import api as template_views

app_name = "api"

urlpatterns = [
    path("event-rules/", include("event_sends.urls")),
    path("topics/", include("topics.urls")),
    path("schedules/", include("schedules.urls")),
    path("otp/", include("otp.urls")),
    path("webhooks/", webhook_views.WebhookEndpointsApi.as_view(), name="webhooks"),
    path(
        "webhooks/<uuid:endpoint_id>/",
        webhook_views.WebhookEndpointDetailApi.as_view(),
        name="webhook-detail",
    ),
    path("emails/", views.EmailsApi.as_view(), name="emails"),
    path("emails/<uuid:email_id>/", views.EmailDetailApi.as_view(), name="email-detail"),
    path("emails/<uuid:email_id>/retry/", views.EmailRetryApi.as_view(), name="email-retry"),
    path("emails/<uuid:email_id>/cancel/", views.EmailCancelApi.as_view(), name="email-cancel"),
    path("batches/", views.BatchesApi.as_view(), name="batches"),
    path("batches/<uuid:batch_id>/", views.BatchDetailApi.as_view(), name="batch-detail"),
    path("suppressions/", suppression_views.SuppressionsApi.as_view(), name="suppressions"),
    path(
        "suppressions/<str:address>/",
        suppression_views.SuppressionDetailApi.as_view(),
        name="suppression-detail",
    ),
    path("sender-domains/", sender_domain_views.SenderDomainsApi.as_view(), name="sender-domains"),
    path(
        "sender-domains/operator-verify/",
        sender_domain_views.SenderDomainOperatorVerifyApi.as_view(),
        name="sender-domain-operator-verify",
    ),
    path(
        "sender-domains/<int:domain_id>/",
        sender_domain_views.SenderDomainDetailApi.as_view(),
        name="sender-domain-detail",
    ),
    path(
        "sender-domains/<int:domain_id>/verify/",
        sender_domain_views.SenderDomainVerifyApi.as_view(),
        name="sender-domain-verify",
    ),
    path("failed/", failed_views.FailedEmailsApi.as_view(), name="failed"),
    path("failed/retry/", failed_views.FailedRetryApi.as_view(), name="failed-retry"),
    path("failed/cancel/", failed_views.FailedCancelApi.as_view(), name="failed-cancel"),
    path("queues/", queue_views.QueuesApi.as_view(), name="queues"),
    path("queues/<str:name>/pause/", queue_views.QueuePauseApi.as_view(), name="queue-pause"),
    path("queues/<str:name>/resume/", queue_views.QueueResumeApi.as_view(), name="queue-resume"),
    path("templates/", template_views.TemplatesApi.as_view(), name="templates"),
    path(
        "templates/<slug:slug>/", template_views.TemplateDetailApi.as_view(), name="template-detail"
    ),
    path(
        "templates/<slug:slug>/render/",
        template_views.TemplateRenderApi.as_view(),
        name="template-render",
    ),
    path(
        "templates/<slug:slug>/test/",
        template_views.TemplateTestSendApi.as_view(),
        name="template-test-send",
    ),
]
