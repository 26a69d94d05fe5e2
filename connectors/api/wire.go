package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
)

// The wire format is these DTOs, not bridge's structs, so the core can
// change its model without changing the protocol. Inbound and outbound
// differ only where the docs say so: data vs url, and origin.

type wireSender struct {
	ID      string `json:"id,omitempty"`
	Name    string `json:"name,omitempty"`
	IsOwner bool   `json:"is_owner,omitempty"`
}

// wireMediaShape is how an attachment is shown, both ways.
type wireMediaShape struct {
	Kind       string `json:"kind,omitempty"` // voice, sticker, gif, video_note
	DurationMS int64  `json:"duration_ms,omitempty"`
	Width      int    `json:"width,omitempty"`
	Height     int    `json:"height,omitempty"`
	Waveform   []int  `json:"waveform,omitempty"`
	// Thumbnail is a small preview image, base64 in JSON.
	Thumbnail []byte `json:"thumbnail,omitempty"`
}

type inMedia struct {
	MIME    string `json:"mime"`
	Name    string `json:"name"`
	Size    int64  `json:"size"`
	Caption string `json:"caption"`
	Data    string `json:"data"`
	wireMediaShape
}

type wireMention struct {
	ID    string `json:"id,omitempty"`
	Name  string `json:"name,omitempty"`
	Owner bool   `json:"owner,omitempty"`
	Text  string `json:"text"`
}

type wirePoll struct {
	Question string   `json:"question"`
	Options  []string `json:"options"`
	Choices  int      `json:"choices,omitempty"`
}

type inVote struct {
	Choices []int `json:"choices"`
}

type outVote struct {
	Choices  []int    `json:"choices"`
	Question string   `json:"question,omitempty"`
	Options  []string `json:"options,omitempty"`
	Tally    []int    `json:"tally,omitempty"`
}

type wireLocation struct {
	Latitude  float64 `json:"latitude"`
	Longitude float64 `json:"longitude"`
	Name      string  `json:"name,omitempty"`
	Address   string  `json:"address,omitempty"`
	Live      bool    `json:"live,omitempty"`
}

type inEvent struct {
	ID             string        `json:"id"`
	Kind           string        `json:"kind"`
	Chat           string        `json:"chat"`
	ChatName       string        `json:"chat_name"`
	ChatDirect     bool          `json:"chat_direct"`
	Sender         wireSender    `json:"sender"`
	Time           string        `json:"time"`
	Text           string        `json:"text"`
	HTML           string        `json:"html"`
	Emote          bool          `json:"emote"`
	Notice         bool          `json:"notice"`
	StoppedTyping  bool          `json:"stopped_typing"`
	ReplyTo        string        `json:"reply_to"`
	Target         string        `json:"target"`
	TargetReaction string        `json:"target_reaction"`
	Emoji          string        `json:"emoji"`
	Media          []inMedia     `json:"media"`
	Location       *wireLocation `json:"location"`
	ExpiresInSec   int64         `json:"expires_in_sec"`
	Mentions       []wireMention `json:"mentions"`
	Poll           *wirePoll     `json:"poll"`
	Vote           *inVote       `json:"vote"`
}

type outMedia struct {
	MIME    string `json:"mime,omitempty"`
	Name    string `json:"name,omitempty"`
	Size    int64  `json:"size"`
	Caption string `json:"caption,omitempty"`
	URL     string `json:"url"`
	wireMediaShape
}

type outOrigin struct {
	Connector  string `json:"connector"`
	Chat       string `json:"chat"`
	ChatName   string `json:"chat_name,omitempty"`
	ChatDirect bool   `json:"chat_direct,omitempty"`
}

type outEvent struct {
	ID             string        `json:"id,omitempty"`
	Kind           string        `json:"kind"`
	Chat           string        `json:"chat"`
	ChatName       string        `json:"chat_name,omitempty"`
	Sender         wireSender    `json:"sender"`
	Time           string        `json:"time"`
	Text           string        `json:"text,omitempty"`
	HTML           string        `json:"html,omitempty"`
	Emote          bool          `json:"emote,omitempty"`
	Notice         bool          `json:"notice,omitempty"`
	StoppedTyping  bool          `json:"stopped_typing,omitempty"`
	History        bool          `json:"history,omitempty"`
	ReplyTo        string        `json:"reply_to,omitempty"`
	Target         string        `json:"target,omitempty"`
	TargetReaction string        `json:"target_reaction,omitempty"`
	Emoji          string        `json:"emoji,omitempty"`
	Media          []outMedia    `json:"media,omitempty"`
	Location       *wireLocation `json:"location,omitempty"`
	ExpiresInSec   int64         `json:"expires_in_sec,omitempty"`
	Mentions       []wireMention `json:"mentions,omitempty"`
	Poll           *wirePoll     `json:"poll,omitempty"`
	Vote           *outVote      `json:"vote,omitempty"`
	Origin         *outOrigin    `json:"origin,omitempty"`
}

// apiError is an error with its HTTP status and protocol code.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

// Protocol error codes.
const (
	codeBadRequest       = "bad_request"
	codeUnauthorized     = "unauthorized"
	codeTooLarge         = "too_large"
	codeNotFound         = "not_found"
	codeNoRoute          = "no_route"
	codeMethodNotAllowed = "method_not_allowed"
	codeUnavailable      = "unavailable"
	codeInternal         = "internal"
)

func badRequest(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, codeBadRequest, fmt.Sprintf(format, args...)}
}

// decodeStrict decodes exactly one JSON value into v, refusing unknown
// fields, and turns the decoder's errors into one-line reasons that name
// the field.
func decodeStrict(data []byte, v any, what string) *apiError {
	if len(bytes.TrimSpace(data)) == 0 {
		return badRequest("%s is empty; expected a JSON object", what)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("%s", jsonReason(err, what))
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("%s has data after its JSON object", what)
	}
	return nil
}

func jsonReason(err error, what string) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("%s is malformed JSON at byte %d: %s", what, syn.Offset, strings.TrimPrefix(syn.Error(), "json: "))
	case errors.As(err, &typ):
		if typ.Field == "" {
			return fmt.Sprintf("%s must be a JSON object, not %s", what, typ.Value)
		}
		return fmt.Sprintf("field %s must be %s, not %s", typ.Field, jsonType(typ.Type.Kind().String()), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Sprintf("%s is malformed JSON: it ends early", what)
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if strings.HasPrefix(msg, "unknown field") {
		return msg + " (see docs/api.md for the schema)"
	}
	return fmt.Sprintf("%s is malformed JSON: %s", what, msg)
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return "a number"
}

// inbound is a decoded, valid inbound event with its attachments' bytes,
// not yet stored.
type inbound struct {
	ev    *bridge.Event
	media [][]byte
}

// parseEvent decodes and validates one inbound event; what names the
// JSON document in error messages ("body", "event").
func (c *Connector) parseEvent(data []byte, what string) (*inbound, *apiError) {
	var in inEvent
	if err := decodeStrict(data, &in, what); err != nil {
		return nil, err
	}
	if in.ID != "" && strings.HasPrefix(in.ID, bridge.KeyPrefix) {
		return nil, badRequest("id %q starts with %q, which is reserved for ids the bridge assigns", in.ID, bridge.KeyPrefix)
	}
	if in.Kind == "" {
		return nil, badRequest("kind is required: one of message, edit, delete, reaction, reaction_remove, vote, typing, read")
	}
	ev := &bridge.Event{
		Kind:           bridge.Kind(in.Kind),
		Chat:           bridge.ChatRef{Connector: c.name, ID: in.Chat, Name: in.ChatName, Direct: in.ChatDirect},
		ID:             in.ID,
		Sender:         bridge.Sender{ID: in.Sender.ID, Name: in.Sender.Name, IsOwner: in.Sender.IsOwner},
		Text:           in.Text,
		HTML:           in.HTML,
		Emote:          in.Emote,
		Notice:         in.Notice,
		StoppedTyping:  in.StoppedTyping,
		ReplyTo:        in.ReplyTo,
		Target:         in.Target,
		TargetReaction: in.TargetReaction,
		Emoji:          in.Emoji,
	}
	if in.Time == "" {
		ev.Time = time.Now()
	} else {
		t, err := time.Parse(time.RFC3339Nano, in.Time)
		if err != nil {
			return nil, badRequest("time %q is not RFC 3339 (e.g. 2024-05-01T12:00:00Z)", in.Time)
		}
		ev.Time = t
	}
	res := &inbound{ev: ev}
	for i, m := range in.Media {
		if m.Data == "" {
			return nil, badRequest("media[%d].data is required: the attachment's bytes in base64", i)
		}
		b, err := base64.StdEncoding.DecodeString(m.Data)
		if err != nil {
			return nil, badRequest("media[%d].data is not valid base64: %v", i, err)
		}
		if int64(len(b)) > c.opts.MaxMediaBytes {
			return nil, &apiError{http.StatusRequestEntityTooLarge, codeTooLarge,
				fmt.Sprintf("media[%d] is %d bytes, over max_media_bytes (%d)", i, len(b), c.opts.MaxMediaBytes)}
		}
		// Size is what the bytes are, whatever the client claimed.
		switch k := bridge.MediaKind(m.Kind); k {
		case bridge.MediaPlain, bridge.MediaVoice, bridge.MediaSticker, bridge.MediaGIF, bridge.MediaVideoNote:
		default:
			return nil, badRequest("media[%d].kind %q is not one of voice, sticker, gif, video_note (or none)", i, m.Kind)
		}
		if m.DurationMS < 0 || m.Width < 0 || m.Height < 0 {
			return nil, badRequest("media[%d]: duration_ms, width and height cannot be negative", i)
		}
		for _, v := range m.Waveform {
			if v < 0 || v > 1024 {
				return nil, badRequest("media[%d].waveform has %d; samples go from 0 to 1024", i, v)
			}
		}
		ev.Media = append(ev.Media, bridge.Media{MIME: m.MIME, Name: m.Name, Size: int64(len(b)), Caption: m.Caption,
			Kind: bridge.MediaKind(m.Kind), DurationMS: m.DurationMS, Width: m.Width, Height: m.Height, Waveform: m.Waveform, Thumbnail: m.Thumbnail})
		res.media = append(res.media, b)
	}
	if l := in.Location; l != nil {
		ev.Location = &bridge.Location{Latitude: l.Latitude, Longitude: l.Longitude, Name: l.Name, Address: l.Address, Live: l.Live}
	}
	if in.ExpiresInSec < 0 {
		return nil, badRequest("expires_in_sec is %d; it cannot be negative", in.ExpiresInSec)
	}
	ev.ExpiresInSec = in.ExpiresInSec
	for _, m := range in.Mentions {
		ev.Mentions = append(ev.Mentions, bridge.Mention{ID: m.ID, Name: m.Name, Owner: m.Owner, Text: m.Text})
	}
	if p := in.Poll; p != nil {
		ev.Poll = &bridge.Poll{Question: p.Question, Options: p.Options, Choices: p.Choices}
	}
	if v := in.Vote; v != nil {
		if v.Choices == nil {
			return nil, badRequest("vote.choices is required: the indexes of the options picked, from 0 ([] withdraws the vote)")
		}
		ev.Vote = &bridge.Vote{Choices: v.Choices}
	}
	if err := ev.Check(); err != nil {
		return nil, badRequest("%v", err)
	}
	if ev.ID == "" {
		// No id, no idempotency: a resubmission is a new event.
		ev.ID = randomHex(16)
	}
	return res, nil
}

// encodeOutgoing is the wire form of an outgoing event whose attachments
// are already stored.
func encodeOutgoing(out *bridge.Outgoing, id string, media []storedMedia) ([]byte, error) {
	ev := &out.Event
	t := ev.Time
	if t.IsZero() {
		t = time.Now()
	}
	o := outEvent{
		ID:             id,
		Kind:           string(ev.Kind),
		Chat:           ev.Chat.ID,
		ChatName:       ev.Chat.Name,
		Sender:         wireSender{ID: ev.Sender.ID, Name: ev.Sender.Name, IsOwner: ev.Sender.IsOwner},
		Time:           t.UTC().Format(time.RFC3339Nano),
		Text:           ev.Text,
		HTML:           ev.HTML,
		Emote:          ev.Emote,
		Notice:         ev.Notice,
		StoppedTyping:  ev.StoppedTyping,
		History:        ev.History,
		ReplyTo:        ev.ReplyTo,
		Target:         ev.Target,
		TargetReaction: ev.TargetReaction,
		Emoji:          ev.Emoji,
	}
	for i, s := range media {
		m := ev.Media[i]
		o.Media = append(o.Media, outMedia{MIME: s.mime, Name: m.Name, Size: s.size, Caption: m.Caption, URL: mediaPath + s.digest,
			wireMediaShape: wireMediaShape{Kind: string(m.Kind), DurationMS: m.DurationMS, Width: m.Width, Height: m.Height, Waveform: m.Waveform, Thumbnail: m.Thumbnail}})
	}
	if l := ev.Location; l != nil {
		o.Location = &wireLocation{Latitude: l.Latitude, Longitude: l.Longitude, Name: l.Name, Address: l.Address, Live: l.Live}
	}
	o.ExpiresInSec = ev.ExpiresInSec
	for _, m := range ev.Mentions {
		o.Mentions = append(o.Mentions, wireMention{ID: m.ID, Name: m.Name, Owner: m.Owner, Text: m.Text})
	}
	if p := ev.Poll; p != nil {
		o.Poll = &wirePoll{Question: p.Question, Options: p.Options, Choices: p.Choices}
	}
	if v := ev.Vote; v != nil {
		o.Vote = &outVote{Choices: v.Choices, Question: v.Question, Options: v.Options, Tally: v.Tally}
		if o.Vote.Choices == nil {
			o.Vote.Choices = []int{}
		}
	}
	if ev.Origin.Connector != "" || ev.Origin.ID != "" {
		o.Origin = &outOrigin{Connector: ev.Origin.Connector, Chat: ev.Origin.ID, ChatName: ev.Origin.Name, ChatDirect: ev.Origin.Direct}
	}
	return json.Marshal(o)
}

// Frames the server sends.

type helloFrame struct {
	Type      string `json:"type"`
	Version   int    `json:"version"`
	Connector string `json:"connector"`
}

type eventFrame struct {
	Type  string          `json:"type"`
	Chat  string          `json:"chat"`
	Seq   int64           `json:"seq,omitempty"`
	Event json.RawMessage `json:"event"`
}

type replyFrame struct {
	Type      string `json:"type"`
	Ref       string `json:"ref,omitempty"`
	ID        string `json:"id,omitempty"`
	Chat      string `json:"chat,omitempty"`
	Seq       *int64 `json:"seq,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
	Code      string `json:"code,omitempty"`
	Error     string `json:"error,omitempty"`
}

// clientFrame is every frame a client may send; type says which fields
// matter.
type clientFrame struct {
	Type  string          `json:"type"`
	Ref   string          `json:"ref"`
	Chat  string          `json:"chat"`
	Since *int64          `json:"since"`
	Event json.RawMessage `json:"event"`
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own frame structs reach here
	}
	return b
}

func eventFrameBytes(chat string, seq int64, payload []byte) []byte {
	return mustJSON(eventFrame{Type: "event", Chat: chat, Seq: seq, Event: payload})
}

func errorFrame(ref string, e *apiError) []byte {
	return mustJSON(replyFrame{Type: "error", Ref: ref, Code: e.code, Error: e.msg})
}
