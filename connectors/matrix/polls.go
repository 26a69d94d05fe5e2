package matrix

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/event"

	"github.com/phonebridge/phonebridge/bridge"
)

// Polls are MSC3381's poll start events (org.matrix.msc3381.poll.start),
// which Element shows as polls, with an extensible-events text fallback
// for clients that do not.

// pollKey is where MSC3381 keeps the poll in a poll start event.
const pollKey = "org.matrix.msc3381.poll.start"

// pollContent is out's poll as a poll start event's content; prefix names
// the sender in bot mode.
func pollContent(out *bridge.Outgoing, prefix string) map[string]any {
	p := out.Poll
	answers := make([]map[string]any, len(p.Options))
	lines := []string{"📊 " + prefix + p.Question}
	for i, o := range p.Options {
		answers[i] = map[string]any{"id": strconv.Itoa(i + 1), "org.matrix.msc1767.text": o}
		lines = append(lines, fmt.Sprintf("%d. %s", i+1, o))
	}
	maxSelections := p.Choices
	if maxSelections == 0 {
		maxSelections = len(p.Options) // any: all of them
	}
	content := map[string]any{
		pollKey: map[string]any{
			"kind":           "org.matrix.msc3381.poll.disclosed",
			"max_selections": maxSelections,
			"question":       map[string]any{"org.matrix.msc1767.text": prefix + p.Question},
			"answers":        answers,
		},
		"org.matrix.msc1767.text": strings.Join(lines, "\n"),
	}
	if out.ReplyTo != "" {
		content["m.relates_to"] = map[string]any{"m.in_reply_to": map[string]any{"event_id": out.ReplyTo}}
	}
	return content
}

// poll asks out's poll; words with it follow as their own message.
func (s *roomSender) poll(ctx context.Context, out *bridge.Outgoing) (string, error) {
	prefix := ""
	if showsSender(s.senderFormat, out) {
		prefix, _ = senderPrefix(s.senderFormat, senderName(out.Sender))
	}
	first, err := s.put(ctx, out.Key, event.EventUnstablePollStart, pollContent(out, prefix))
	if err != nil || (out.Text == "" && len(out.Media) == 0) {
		return first, err
	}
	rest := *out
	rest.Poll, rest.ReplyTo, rest.Key = nil, "", out.Key+".t"
	if _, err := s.message(ctx, &rest); err != nil {
		return "", err
	}
	return first, nil
}

// pollOf reads a poll start event's poll; false for one the core would
// refuse, which is then said in its fallback words.
func pollOf(raw map[string]any) (*bridge.Poll, string, bool) {
	fallback, _ := raw["org.matrix.msc1767.text"].(string)
	start, _ := raw[pollKey].(map[string]any)
	if start == nil {
		return nil, fallback, false
	}
	text := func(v any) string {
		m, _ := v.(map[string]any)
		s, _ := m["org.matrix.msc1767.text"].(string)
		if s == "" {
			s, _ = m["body"].(string)
		}
		return strings.TrimSpace(s)
	}
	p := &bridge.Poll{Question: text(start["question"])}
	answers, _ := start["answers"].([]any)
	for _, a := range answers {
		if o := text(a); o != "" {
			p.Options = append(p.Options, o)
		}
	}
	if n, ok := start["max_selections"].(float64); ok && n == 1 {
		p.Choices = 1
	}
	if p.Check() != nil {
		return nil, fallback, false
	}
	return p, fallback, true
}
