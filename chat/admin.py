from django.contrib import admin
from django.db.models import Count

from .models import ChatMessage, ChatRoom, Membership
from .users import LOGIN_FIELD


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    raw_id_fields = ["user"]
    readonly_fields = ["last_read_id"]


@admin.register(ChatRoom)
class ChatRoomAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "is_direct", "member_count", "date_created"]
    list_filter = ["is_direct"]
    search_fields = ["name", f"users__{LOGIN_FIELD}"]
    inlines = [MembershipInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_count=Count("users", distinct=True))

    @admin.display(ordering="member_count")
    def member_count(self, room: ChatRoom) -> int:
        return room.member_count


@admin.register(ChatMessage)
class ChatMessageAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "room", "date_created", "text"]
    list_select_related = ["user", "room"]
    search_fields = ["text", f"user__{LOGIN_FIELD}"]
    raw_id_fields = ["user", "room"]
    date_hierarchy = "date_created"
