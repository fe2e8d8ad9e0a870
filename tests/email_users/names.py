"""A DISPLAY_NAME function for the tests: the user's full name."""


def full_name(user) -> str:
    return user.full_name
