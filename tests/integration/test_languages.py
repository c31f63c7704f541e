"""How a page's language is chosen (Django's LocaleMiddleware over LANGUAGES = en, zh-hans), and the display
formatters in both languages: the browser's Accept-Language picks, the language cookie the header's switch
sets wins over it, English stays the default, and machine surfaces (/api/v1) never change language."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone, translation

from agentops.lib import display
from tests.fixtures.people import ALICE, client_for

LANG = re.compile(r'<html lang="([^"]+)">')


def page_language(client: Client, path: str = "/accounts/login/", **headers) -> str:
    response = client.get(path, headers=headers)
    assert response.status_code == 200
    return LANG.search(response.content.decode()).group(1)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("accept", "language"),
    [
        ("zh", "zh-hans"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-hans"),
        ("zh-Hans", "zh-hans"),
        ("zh-SG", "zh-hans"),
        # Traditional Chinese readers read Simplified more easily than English, and no zh-Hant catalog exists
        ("zh-TW,en;q=0.5", "zh-hans"),
        ("zh-HK", "zh-hans"),
        ("en-US,en;q=0.9", "en"),
        ("fr-FR,de;q=0.8", "en"),  # a language we do not have: the default
        ("", "en"),
    ],
)
def test_the_browsers_accept_language_picks_the_page_language(accept, language):
    headers = {"accept-language": accept} if accept else {}
    assert page_language(Client(), **headers) == language


@pytest.mark.django_db
def test_the_switch_keeps_the_choice_in_the_cookie_and_returns_to_the_page(alice):
    client = client_for(ALICE)
    response = client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/runs/?status=failed"})
    assert response.status_code == 302 and response["Location"] == "/runs/?status=failed"
    assert client.cookies["django_language"].value == "zh-hans"
    html = client.get("/runs/", headers={"accept-language": "en-US"}).content.decode()
    assert '<html lang="zh-hans">' in html and "运行" in html and 'aria-pressed="true" class="current"' in html
    client.post("/i18n/setlang/", {"language": "en", "next": "/runs/"})
    assert page_language(client, "/runs/", **{"accept-language": "zh-CN"}) == "en"
    refused = client.post("/i18n/setlang/", {"language": "en", "next": "https://evil.example/"})
    assert refused["Location"] == "/"  # never off the site


@pytest.mark.django_db
def test_the_api_answers_in_english_whatever_the_browser_asks():
    response = Client().get("/api/v1/runs", headers={"accept-language": "zh-CN"})
    assert response.status_code == 401
    assert not re.search(r"[\u4e00-\u9fff]", response.content.decode())


def test_money_counts_durations_and_ages_in_both_languages():
    now = timezone.now()
    with translation.override("en"):
        assert display.usd(Decimal("1234.5")) == "$1,234.50" and display.usd(0.00123) == "$0.0012"
        assert display.usd(Decimal("0.5"), 6) == "$0.500000" and display.usd_rate(Decimal("0.002500")) == "$0.0025"
        assert display.tokens(12345) == "12,345 tokens" and display.tokens(1) == "1 token"
        assert display.duration(0.84) == "840 ms" and display.duration(845) == "14 min 5 s"
        assert display.ago(180) == "3 min ago"
        assert display.time_left(now - timedelta(seconds=75), now) == ("overdue 1:15", True)
    with translation.override("zh-hans"):
        assert display.usd(Decimal("1234.5")) == "US$1,234.50"
        assert display.tokens(12345) == "12,345 个 Token"
        assert display.duration(12.5) == "12.5 秒" and display.duration(12_000) == "3 小时 20 分钟"
        assert display.ago(180) == "3 分钟前" and display.age(7500) == "2 小时 5 分钟"
        assert display.time_left(now - timedelta(seconds=75), now) == ("已超时 1:15", True)
        assert display.number(1_234_567) == "1,234,567"
