package matrix

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

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
	p, _, ok := pollAnswers(raw)
	return p, fallback, ok
}

// pollAnswers reads a poll start event's poll and each option's answer
// id, in the order the neutral poll numbers them (answers without words
// are left out); false for one the core would refuse.
func pollAnswers(raw map[string]any) (*bridge.Poll, []string, bool) {
	start, _ := raw[pollKey].(map[string]any)
	if start == nil {
		return nil, nil, false
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
	var ids []string
	answers, _ := start["answers"].([]any)
	for _, a := range answers {
		if o := text(a); o != "" {
			answer, _ := a.(map[string]any)
			id, _ := answer["id"].(string)
			p.Options = append(p.Options, o)
			ids = append(ids, id)
		}
	}
	if n, ok := start["max_selections"].(float64); ok && n == 1 {
		p.Choices = 1
	}
	if p.Check() != nil {
		return nil, nil, false
	}
	return p, ids, true
}

// Votes are MSC3381 poll responses: the voter's answer ids, related to
// the poll start by reference. A newer response replaces the voter's
// earlier one, as a vote does in the core; none withdraws it.

// responseKey is where MSC3381 keeps the answers in a poll response.
const responseKey = "org.matrix.msc3381.poll.response"

// responseOf reads a poll response: the poll's event id and the answer
// ids picked; false for what is not one.
func responseOf(raw map[string]any) (poll string, answers []string, ok bool) {
	rel, _ := raw["m.relates_to"].(map[string]any)
	if kind, _ := rel["rel_type"].(string); kind != "m.reference" {
		return "", nil, false
	}
	poll, _ = rel["event_id"].(string)
	resp, _ := raw[responseKey].(map[string]any)
	if poll == "" || resp == nil {
		return "", nil, false
	}
	picked, _ := resp["answers"].([]any)
	for _, a := range picked {
		if s, ok := a.(string); ok && !slices.Contains(answers, s) {
			answers = append(answers, s)
		}
	}
	return poll, answers, true
}

// pollAsked fetches the poll start event poll of room: its options' answer
// ids in the neutral order.
func pollAsked(ctx context.Context, cli *mautrix.Client, room id.RoomID, poll string) ([]string, error) {
	evt, err := cli.GetEvent(ctx, room, id.EventID(poll))
	if err != nil {
		return nil, classify(err)
	}
	if evt.Type != event.EventUnstablePollStart {
		return nil, bridge.Permanentf("%s is not a poll (it is %s)", poll, evt.Type.Type)
	}
	_, ids, ok := pollAnswers(evt.Content.Raw)
	if !ok {
		return nil, bridge.Permanentf("the poll %s is not one the bridge can read", poll)
	}
	return ids, nil
}

// voteOf turns a poll response into the vote it is: the answers' places
// in the poll. Answers the poll does not have are left out; an error when
// the poll cannot be read.
func voteOf(ctx context.Context, cli *mautrix.Client, evt *event.Event) (*bridge.Vote, error) {
	poll, answers, _ := responseOf(evt.Content.Raw)
	ids, err := pollAsked(ctx, cli, evt.RoomID, poll)
	if err != nil {
		return nil, err
	}
	v := &bridge.Vote{Choices: []int{}}
	for _, a := range answers {
		if i := slices.Index(ids, a); i >= 0 {
			v.Choices = append(v.Choices, i)
		}
	}
	return v, nil
}

// vote sends out's vote as the sender's own poll response where the
// sender speaks here (a ghost), else as words with the count answering
// the poll.
func (s *roomSender) vote(ctx context.Context, out *bridge.Outgoing) (string, error) {
	if out.Target == "" || out.Vote == nil {
		return "", bridge.Permanentf("a vote needs the poll's id and its choices")
	}
	if s.asSender {
		ids, err := pollAsked(ctx, s.cli, s.room, out.Target)
		if err != nil {
			return "", err
		}
		answers := make([]string, 0, len(out.Vote.Choices))
		for _, c := range out.Vote.Choices {
			if c < 0 || c >= len(ids) {
				return "", bridge.Permanentf("the poll %s has no option %d", out.Target, c+1)
			}
			answers = append(answers, ids[c])
		}
		content := map[string]any{
			"m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": out.Target},
			responseKey:    map[string]any{"answers": answers},
		}
		return s.put(ctx, out.Key, event.EventUnstablePollResponse, content)
	}
	words := *out
	words.Kind, words.Notice, words.Text, words.HTML, words.Vote, words.ReplyTo = bridge.KindMessage, true, bridge.VoteText(&out.Event), "", nil, out.Target
	words.Target = ""
	return s.message(ctx, &words)
}

// readVote fills in ev's choices from the poll the response answers,
// read through cli; false, with a line in the log, when the poll cannot
// be read, since the vote then cannot be shown anywhere.
func (c *Connector) readVote(ctx context.Context, cli *mautrix.Client, evt *event.Event, ev *bridge.Event) bool {
	v, err := voteOf(ctx, cli, evt)
	if err != nil {
		c.log.Warn("a Matrix poll vote is not relayed: its poll cannot be read", "room", evt.RoomID, "vote", evt.ID, "poll", ev.Target, "err", oneLine(err))
		return false
	}
	ev.Vote = v
	return true
}
