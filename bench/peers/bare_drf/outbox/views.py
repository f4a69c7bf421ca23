"""POST /api/v1/emails/: validate a small serializer, insert one row, answer 202."""

from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from outbox.models import Message


class MessageInputSerializer(serializers.Serializer):
    """The same body Mailqueue's endpoint gets: to, template, context."""

    to = serializers.ListField(child=serializers.EmailField(), min_length=1, max_length=50)
    template = serializers.SlugField(max_length=100)
    context = serializers.DictField()


class MessageCreateApi(APIView):
    """Accept one email."""

    def post(self, request: Request) -> Response:
        """Validate, insert, answer with the new id."""
        serializer = MessageInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        message = Message.objects.create(**serializer.validated_data)
        return Response(
            {"id": str(message.id), "status": message.status}, status=status.HTTP_202_ACCEPTED
        )
