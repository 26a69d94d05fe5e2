package matrix

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix"

	"github.com/phonebridge/phonebridge/bridge"
)

// defaultRateLimitWait is the wait after a rate limit that names none.
const defaultRateLimitWait = 5 * time.Second

// classify puts a homeserver error in the core's terms: a rate limit waits
// as long as the server asks; a 4xx is the server's considered refusal
// and permanent; everything else (no answer, 5xx) is transient.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil {
		return wrapf(err, "no answer from the homeserver: %s", oneLine(err))
	}
	status := httpErr.Response.StatusCode
	code, msg := "", ""
	if re := httpErr.RespError; re != nil {
		code, msg = re.ErrCode, re.Err
	}
	if code == "" {
		msg = httpErr.ResponseBody
	}
	what := describe(status, code, msg)
	switch {
	case code == mautrix.MLimitExceeded.ErrCode || status == http.StatusTooManyRequests:
		return bridge.RetryAfter(retryAfter(httpErr), wrapf(err, "the homeserver rate-limits the bot (%s)", what))
	case status >= 500 || status == http.StatusRequestTimeout:
		return wrapf(err, "the homeserver failed (%s)", what)
	case status == http.StatusUnauthorized:
		// A revoked token is fixed by logging in again, not by dropping
		// what waits: the event stays queued.
		return wrapf(err, "the homeserver rejected the bot's access token (%s)", what)
	case status >= 400:
		return bridge.Permanent(wrapf(err, "the homeserver refused (%s)", what))
	}
	return err
}

func describe(status int, code, msg string) string {
	s := "HTTP " + strconv.Itoa(status)
	if code != "" {
		s += " " + code
	}
	if msg = shorten(msg); msg != "" {
		s += ": " + msg
	}
	return s
}

// hsError is a homeserver error told in one short line; it unwraps to
// mautrix's error, whose text holds the whole request URL.
type hsError struct {
	msg string
	err error
}

func (e *hsError) Error() string { return e.msg }
func (e *hsError) Unwrap() error { return e.err }

func wrapf(err error, format string, args ...any) error {
	return &hsError{msg: fmt.Sprintf(format, args...), err: err}
}

// maxErrorRunes bounds the server's words in one log line (an error page
// can be long).
const maxErrorRunes = 200

func shorten(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > maxErrorRunes {
		s = string(r[:maxErrorRunes]) + "…"
	}
	return s
}

// oneLine tells err on one short line: a failed request by its cause
// ("connection refused") rather than its URL.
func oneLine(err error) string {
	msg := err.Error()
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		msg = strings.Replace(msg, urlErr.Error(), urlErr.Err.Error(), 1)
	}
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil && httpErr.RespError == nil && httpErr.WrappedError == nil {
		msg = strings.Replace(msg, httpErr.Error(), describe(httpErr.Response.StatusCode, "", httpErr.ResponseBody), 1)
	}
	return shorten(msg)
}

// retryAfter is the wait a rate limit asks for: retry_after_ms in the
// body, else the Retry-After header, else a default.
func retryAfter(httpErr mautrix.HTTPError) time.Duration {
	if re := httpErr.RespError; re != nil {
		if ms, ok := re.ExtraData["retry_after_ms"].(float64); ok && ms > 0 {
			return time.Duration(ms) * time.Millisecond
		}
	}
	if h := httpErr.Response.Header.Get("Retry-After"); h != "" {
		if secs, err := strconv.Atoi(h); err == nil && secs > 0 {
			return time.Duration(secs) * time.Second
		}
		if at, err := http.ParseTime(h); err == nil {
			if d := time.Until(at); d > 0 {
				return d
			}
		}
	}
	return defaultRateLimitWait
}
