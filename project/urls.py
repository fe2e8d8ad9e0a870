from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from chat.views import LoginView, content_security_policy

urlpatterns = [
    path("admin/", admin.site.urls),
    # Django's own login view, throttled; its page carries the chat page's policy in a <meta> element.
    path("login/", LoginView.as_view(template_name="chat/login.html",
                                     extra_context={"csp_meta": content_security_policy(meta=True)}),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The chat page at /, its REST API at /api/.
    path("", include("chat.urls")),
]
