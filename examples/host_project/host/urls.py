from django.contrib.auth import views as auth_views
from django.urls import include, path

from orders import views as orders

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("orders/<int:order>/ship/", orders.ship, name="ship"),
    path("chat/", include("chat.urls")),   # chat: the page; the REST API under chat/api/
]
