package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/phonebridge/phonebridge/bridge"
)

func (c *Connector) routes() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Path
		switch {
		case path == "/v1/health":
			if allow(w, r, http.MethodGet, http.MethodHead) {
				writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
			}
		case path == "/v1/events":
			if allow(w, r, http.MethodPost) && c.authorized(w, r) {
				c.handleEvents(w, r)
			}
		case path == "/v1/ws":
			if allow(w, r, http.MethodGet) && c.authorized(w, r) {
				c.handleWS(w, r)
			}
		case strings.HasPrefix(path, mediaPath):
			if allow(w, r, http.MethodGet, http.MethodHead) && c.authorized(w, r) {
				c.handleMedia(w, r, strings.TrimPrefix(path, mediaPath))
			}
		default:
			writeError(w, &apiError{http.StatusNotFound, codeNotFound, fmt.Sprintf("unknown path %q; the API's paths are under /v1 (see docs/api.md)", path)})
		}
	})
}

func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, &apiError{http.StatusMethodNotAllowed, codeMethodNotAllowed,
		fmt.Sprintf("method %s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(methods, " or "))})
	return false
}

// authorized checks the bearer token from the header or, for browsers'
// websockets, the access_token query parameter. Digests are compared so
// neither the comparison's time nor its length check leaks the token.
func (c *Connector) authorized(w http.ResponseWriter, r *http.Request) bool {
	var token string
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			token = strings.TrimSpace(rest)
		}
	} else {
		token = r.URL.Query().Get("access_token")
	}
	sum := sha256.Sum256([]byte(token))
	if token != "" && subtle.ConstantTimeCompare(sum[:], c.tokenSum[:]) == 1 {
		return true
	}
	w.Header().Set("WWW-Authenticate", "Bearer")
	writeError(w, &apiError{http.StatusUnauthorized, codeUnauthorized,
		"missing or wrong token: send Authorization: Bearer TOKEN or ?access_token=TOKEN"})
	return false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, map[string]string{"error": e.msg, "code": e.code})
}

func (c *Connector) tooLarge() *apiError {
	return &apiError{http.StatusRequestEntityTooLarge, codeTooLarge,
		fmt.Sprintf("body is over max_message_bytes (%d bytes)", c.opts.MaxMessageBytes)}
}

func (c *Connector) handleEvents(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > c.opts.MaxMessageBytes {
		writeError(w, c.tooLarge())
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, c.opts.MaxMessageBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, c.tooLarge())
		} else {
			writeError(w, badRequest("could not read the body: %v", err))
		}
		return
	}
	in, e := c.parseEvent(body, "body")
	if e != nil {
		writeError(w, e)
		return
	}
	if e := c.storeInbound(in); e != nil {
		writeError(w, e)
		return
	}
	if err := bridge.Accept(r.Context(), c.sink, in.ev); err != nil {
		if r.Context().Err() != nil {
			return // the client left; nobody to answer
		}
		writeError(w, submitError(err))
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"id": in.ev.ID})
}

// storeInbound stores an inbound event's attachments and sets their refs.
func (c *Connector) storeInbound(in *inbound) *apiError {
	for i, b := range in.media {
		digest, _, err := c.media.put(bytes.NewReader(b))
		if err != nil {
			c.log.Error("an attachment could not be stored", "err", err)
			return &apiError{http.StatusServiceUnavailable, codeUnavailable, fmt.Sprintf("media[%d] could not be stored", i)}
		}
		in.ev.Media[i].Ref = digest
	}
	return nil
}

// submitError maps the core's refusal to the protocol's.
func submitError(err error) *apiError {
	if errors.Is(err, bridge.ErrNoRoute) {
		return &apiError{http.StatusNotFound, codeNoRoute, err.Error()}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &apiError{http.StatusServiceUnavailable, codeUnavailable, "the bridge did not answer in time"}
	}
	return &apiError{http.StatusServiceUnavailable, codeUnavailable, "the bridge did not take the event: " + err.Error()}
}

func (c *Connector) handleMedia(w http.ResponseWriter, r *http.Request, id string) {
	f, err := c.media.open(id)
	if err != nil {
		writeError(w, &apiError{http.StatusNotFound, codeNotFound, fmt.Sprintf("no stored attachment %q", id)})
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		writeError(w, &apiError{http.StatusInternalServerError, codeInternal, "could not read the attachment"})
		return
	}
	mime := c.events.mediaType(r.Context(), id)
	if mime == "" {
		mime = "application/octet-stream"
	}
	h := w.Header()
	h.Set("Content-Type", mime)
	// The bytes are whatever a chat sent: never let a browser run them
	// in the API's origin.
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "sandbox")
	// Content-addressed: the URL's bytes never change.
	h.Set("ETag", `"`+id+`"`)
	h.Set("Cache-Control", "private, max-age=31536000, immutable")
	http.ServeContent(w, r, "", st.ModTime(), f)
}
