from kit.pii import mask_email, mask_name, mask_phone


def test_phone_keeps_prefix_and_last_four_only():
    assert mask_phone("+8613800138000") == "+86138****8000"
    assert mask_phone("13800138000") == "138****8000"
    assert mask_phone("12345") == "*****"
    assert mask_phone(None) is None


def test_email_and_names_keep_one_character():
    assert mask_email("xiaoming@example.com") == "x***@example.com"
    assert mask_email("@example.com") == "***@example.com"
    assert mask_name("小明") == "小*"
    assert mask_name("x") == "x*"
    assert mask_name(None) is None and mask_email(None) is None
