package whatsapp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"slices"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
)

// Poll votes. WhatsApp encrypts a vote with a key derived from the poll's
// message secret (which whatsmeow keeps for the polls it receives and
// sends), and a vote names the options it picks by the SHA-256 of their
// names. So the link remembers each poll's option names exactly as
// WhatsApp has them (msgRef.Options, whatsapp_messages.poll_options, gone
// with the message's record when it is pruned or disappears), and:
//   - a vote arriving is decrypted with the live client, its hashes turned
//     back into the indexes of the poll's options, and relayed as a
//     KindVote committed before it is acknowledged; a vote in a poll the
//     link does not know, or one it cannot decrypt, cannot be shown: it is
//     logged and dropped;
//   - the owner's vote made elsewhere (Matrix) becomes the account's real
//     vote; anyone else's goes as words answering the poll, since WhatsApp
//     gives the account one vote and it must not vote as the owner for
//     others.

// relayVote relays a poll vote (e carries a PollUpdateMessage), as it
// came: whatsmeow finds the poll's secret by the forms of the chat and
// sender WhatsApp used. It says whether the event was dealt with.
func (c *Connector) relayVote(ctx context.Context, e *events.Message, history bool) bool {
	pollID := e.Message.GetPollUpdateMessage().GetPollCreationMessageKey().GetID()
	chat := c.canonicalJID(ctx, e.Info.Chat)
	poll, err := c.lookup(ctx, chat, pollID)
	if err != nil {
		c.log.Error("a WhatsApp vote was not relayed; WhatsApp will deliver it again", "link", c.name, "chat", chat.String(), "err", err)
		return false
	}
	if poll == nil || len(poll.Options) == 0 {
		c.log.Warn("dropped a WhatsApp vote in a poll the link does not know", "link", c.name, "chat", chat.String(), "poll", pollID)
		return true
	}
	cli, _ := c.current()
	if cli == nil {
		return false // gone meanwhile: WhatsApp delivers it again
	}
	vote, err := cli.DecryptPollVote(ctx, e)
	if err != nil {
		c.log.Warn("dropped a WhatsApp vote that could not be decrypted", "link", c.name, "chat", chat.String(), "poll", pollID, "err", err)
		return true
	}
	choices, ok := voteChoices(poll.Options, vote.GetSelectedOptions())
	if !ok {
		c.log.Warn("dropped a WhatsApp vote for options its poll does not have", "link", c.name, "chat", chat.String(), "poll", pollID)
		return true
	}

	ce := c.canonical(ctx, e)
	sender := ce.Info.Sender.ToNonAD()
	ev := bridge.Event{
		Kind: bridge.KindVote, Chat: chatRef(ce.Info.Chat.ToNonAD()), ID: e.Info.ID, Time: e.Info.Timestamp,
		Sender: bridge.Sender{ID: sender.String(), Name: c.chats.senderName(ctx, ce.Info.Sender, e.Info.PushName, e.Info.IsFromMe), IsOwner: e.Info.IsFromMe},
		Target: pollID, Vote: &bridge.Vote{Choices: choices}, History: history,
	}
	if sender.IsEmpty() {
		ev.Sender.ID = ""
	}
	if !history {
		if err := c.historyFirst(ctx, ev.Chat.ID); err != nil {
			c.log.Error("a chat's history could not be relayed before its new vote; WhatsApp will deliver the vote again", "link", c.name, "chat", ev.Chat.ID, "err", err)
			return false
		}
	}
	ev.Chat.Name = c.chats.chatName(ctx, ce.Info.Chat)
	return c.submit(ctx, &ev)
}

// voteChoices turns a vote's option hashes into indexes of options, in
// the poll's order; ok is false when one names no option of the poll.
func voteChoices(options []string, hashes [][]byte) (choices []int, ok bool) {
	for _, h := range hashes {
		i := slices.IndexFunc(options, func(o string) bool {
			sum := sha256.Sum256([]byte(o))
			return bytes.Equal(sum[:], h)
		})
		if i < 0 {
			return nil, false
		}
		if !slices.Contains(choices, i) {
			choices = append(choices, i)
		}
	}
	slices.Sort(choices)
	return choices, true
}

// sendVote sends a vote in poll: the owner's as the account's vote,
// anyone else's as words answering the poll.
func (c *Connector) sendVote(ctx context.Context, cli waClient, chat, self types.JID, out *bridge.Outgoing, poll *msgRef) (string, error) {
	if out.Vote == nil {
		return "", bridge.Permanentf("a vote needs its choices")
	}
	if !out.Sender.IsOwner {
		return c.sendVoteText(ctx, cli, chat, self, out)
	}
	names := make([]string, len(out.Vote.Choices))
	for i, choice := range out.Vote.Choices {
		switch {
		case choice >= 0 && choice < len(poll.Options):
			names[i] = poll.Options[choice] // as WhatsApp has it
		case len(poll.Options) == 0 && choice >= 0 && choice < len(out.Vote.Options):
			names[i] = out.Vote.Options[choice]
		default:
			return "", bridge.Permanentf("the poll %s has no option %d", poll.ID, choice+1)
		}
	}
	sender := poll.Sender
	if poll.FromMe {
		sender = self
	}
	info := &types.MessageInfo{
		MessageSource: types.MessageSource{Chat: chat, Sender: sender, IsFromMe: poll.FromMe, IsGroup: chat.Server == types.GroupServer},
		ID:            poll.ID,
	}
	upd, err := cli.EncryptPollVote(ctx, info, &waE2E.PollVoteMessage{SelectedOptions: whatsmeow.HashPollOptions(names)})
	if errors.Is(err, whatsmeow.ErrOriginalMessageSecretNotFound) {
		// A poll from before the link, whose secret WhatsApp never gave
		// it: the vote goes as words rather than not at all.
		c.log.Warn("the owner's vote went to WhatsApp as text: the link lacks the poll's secret", "link", c.name, "chat", chat.String(), "poll", poll.ID)
		return c.sendVoteText(ctx, cli, chat, self, out)
	}
	if err != nil {
		return "", err
	}
	id := messageID(out.Key, 0)
	if _, err := cli.SendMessage(ctx, chat, &waE2E.Message{PollUpdateMessage: upd}, whatsmeow.SendRequestExtra{ID: id}); err != nil {
		return "", classify(err)
	}
	return id, nil
}

// sendVoteText sends a vote in words with the poll's count, answering
// the poll.
func (c *Connector) sendVoteText(ctx context.Context, cli waClient, chat, self types.JID, out *bridge.Outgoing) (string, error) {
	o := *out
	o.Kind, o.Text, o.HTML, o.Notice, o.Emote = bridge.KindMessage, bridge.VoteText(&out.Event), "", true, false
	o.ReplyTo, o.Target, o.Vote, o.Mentions = out.Target, "", nil, nil
	return c.sendMessage(ctx, cli, chat, self, &o)
}
