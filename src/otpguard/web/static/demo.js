// otpguard demo login page: phone number, then code. Served from the package;
// the page CSP allows no inline script, so everything lives here.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = { id: null, expiresAt: 0, resendAt: 0, timer: null, to: null, channel: "sms" };
  const WIDGET_CLASS = { turnstile: "cf-turnstile", hcaptcha: "h-captcha", recaptcha: "g-recaptcha" };

  async function post(path, body) {
    let response;
    try {
      response = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        credentials: "same-origin",
      });
    } catch (err) {
      return { ok: false, error: { message: "Network problem. Check your connection and try again." } };
    }
    let data = {};
    try {
      data = await response.json();
    } catch (err) {
      data = {};
    }
    if (response.ok) return { ok: true, data };
    return {
      ok: false,
      status: response.status,
      error: data.error || { message: "Something went wrong. Try again." },
    };
  }

  function show(el, text) {
    el.textContent = text;
    el.hidden = !text;
  }

  function step(name) {
    $("phone-step").hidden = name !== "phone";
    $("challenge-step").hidden = name !== "challenge";
    $("code-step").hidden = name !== "code";
    $("done").hidden = name !== "done";
  }

  function clock(seconds) {
    const s = Math.max(0, Math.ceil(seconds));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  function tick() {
    const now = Date.now();
    const left = (state.expiresAt - now) / 1000;
    const expiry = $("expiry");
    if (left > 0) {
      expiry.textContent = `Code expires in ${clock(left)}`;
      $("verify").disabled = false;
    } else {
      expiry.textContent = "This code has expired. Ask for a new one.";
      $("verify").disabled = true;
    }
    const wait = (state.resendAt - now) / 1000;
    const resend = $("resend");
    if (wait > 0) {
      resend.disabled = true;
      resend.textContent = `Resend code in ${Math.ceil(wait)} s`;
    } else {
      resend.disabled = false;
      resend.textContent = "Resend code";
    }
  }

  function sent(data) {
    state.id = data.id;
    state.expiresAt = Date.now() + data.expires_in * 1000;
    state.resendAt = Date.now() + data.resend_in * 1000;
    $("sent-to").textContent = data.to;
    $("code").maxLength = data.code_length;
    $("code").value = "";
    show($("code-error"), "");
    step("code");
    tick();
    if (state.timer === null) state.timer = window.setInterval(tick, 250);
    $("code").focus();
  }

  // The start asked for a CAPTCHA (HTTP 428 challenge_required): show the step.
  function challenge(error) {
    const info = error.challenge || {};
    const widget = $("challenge-widget");
    widget.className = `challenge-widget ${WIDGET_CLASS[info.provider] || ""}`.trim();
    widget.dataset.sitekey = info.site_key || "";
    widget.dataset.provider = info.provider || "";
    $("challenge-provider").textContent = info.provider || "CAPTCHA";
    const failed = error.reason === "challenge_failed";
    if (!failed) $("challenge-message").textContent = error.message;
    $("challenge-token").value = "";
    show($("challenge-error"), failed ? error.message : "");
    step("challenge");
    $("challenge-token").focus();
  }

  async function start(body) {
    $("send").disabled = true;
    $("challenge-submit").disabled = true;
    const result = await post("/demo/api/start", body);
    $("send").disabled = false;
    $("challenge-submit").disabled = false;
    if (result.ok) {
      show($("phone-error"), "");
      sent(result.data);
    } else if (result.status === 428) {
      challenge(result.error);
    } else {
      step("phone");
      show($("phone-error"), result.error.message);
    }
  }

  function reset() {
    if (state.timer !== null) window.clearInterval(state.timer);
    Object.assign(state, { id: null, expiresAt: 0, resendAt: 0, timer: null });
    show($("phone-error"), "");
    step("phone");
    $("phone").focus();
  }

  // The destination field follows the channel: a phone number or an email address.
  const FIELDS = {
    sms: { label: "Mobile number", type: "tel", autocomplete: "tel", inputmode: "tel",
           placeholder: "07400 123456", missing: "Enter your mobile number." },
    email: { label: "Email address", type: "email", autocomplete: "email",
             inputmode: "email", placeholder: "you@example.com",
             missing: "Enter your email address." },
  };

  function channel() {
    const checked = document.querySelector('input[name="channel"]:checked');
    return checked ? checked.value : "sms";
  }

  for (const radio of document.querySelectorAll('input[name="channel"]')) {
    radio.addEventListener("change", () => {
      const field = FIELDS[channel()];
      $("to-label").textContent = field.label;
      const input = $("phone");
      input.type = field.type;
      input.autocomplete = field.autocomplete;
      input.inputMode = field.inputmode;
      input.placeholder = field.placeholder;
      show($("phone-error"), "");
    });
  }

  $("phone-step").addEventListener("submit", async (event) => {
    event.preventDefault();
    const to = $("phone").value.trim();
    if (!to) {
      show($("phone-error"), FIELDS[channel()].missing);
      return;
    }
    state.to = to;
    state.channel = channel();
    await start({ to, channel: state.channel });
  });

  $("challenge-step").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = $("challenge-token").value.trim();
    if (!token) {
      show($("challenge-error"), "Complete the check first.");
      return;
    }
    await start({ to: state.to, channel: state.channel, challenge_token: token });
  });

  $("code-step").addEventListener("submit", async (event) => {
    event.preventDefault();
    const code = $("code").value.replace(/\s+/g, "");
    $("verify").disabled = true;
    const result = await post("/demo/api/check", { id: state.id, code });
    $("verify").disabled = false;
    if (result.ok && result.data.signed_in) {
      if (state.timer !== null) window.clearInterval(state.timer);
      state.timer = null;
      $("signed-in-as").textContent = result.data.to;
      step("done");
    } else {
      show($("code-error"), result.error.message);
      $("code").select();
    }
  });

  $("resend").addEventListener("click", async () => {
    $("resend").disabled = true;
    const result = await post("/demo/api/resend", { id: state.id });
    if (result.ok) {
      sent(result.data);
      show($("code-error"), "A new code is on its way; the previous one no longer works.");
    } else {
      if (result.error.resend_in) state.resendAt = Date.now() + result.error.resend_in * 1000;
      show($("code-error"), result.error.message);
      tick();
    }
  });

  $("change").addEventListener("click", reset);
  $("challenge-back").addEventListener("click", reset);
  $("again").addEventListener("click", () => {
    $("phone").value = "";
    reset();
  });
})();
