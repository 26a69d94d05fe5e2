package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/internal/daemon"
	"github.com/phonebridge/phonebridge/internal/linktext"
	"github.com/phonebridge/phonebridge/internal/linkui"
)

// connectLinks loads the config and reaches the links: through the running
// daemon, or in this process when none runs.
func connectLinks(g *globalFlags) (daemon.API, bool, error) {
	cfg, log, err := load(g, true)
	if err != nil {
		return nil, false, err
	}
	return daemon.Connect(cfg, log)
}

func isTerminal(f *os.File) bool {
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

func newLinkCommand(g *globalFlags) *cobra.Command {
	var phone string
	var light bool
	cmd := &cobra.Command{
		Use:   "link NAME",
		Short: "Link a WhatsApp account to the connector NAME, by QR code or pairing code",
		Long: `Link a WhatsApp account to the whatsapp connector NAME, as a linked device
(the way WhatsApp Web is linked): scan the QR code shown here with the phone,
in WhatsApp → Settings → Linked devices → Link a device. WhatsApp replaces the
code every 20 seconds or so; the new one is drawn over the old.

With --phone, link by an 8-character pairing code instead (for servers with
no screen at hand): type it on the phone under Link with phone number instead.

If phonebridge is running, it does the linking and relays at once;
otherwise this command links on its own and the next start relays.`,
		Example: "  phonebridge link me\n  phonebridge link me --phone +15551234567",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, running, err := connectLinks(g)
			if err != nil {
				return err
			}
			defer api.Close()
			out := cmd.OutOrStdout()
			p := linkui.New(out, out == os.Stdout && isTerminal(os.Stdout), light)
			stopTicks := every(time.Second, p.Tick)
			acct, err := api.Link(cmd.Context(), args[0], bridge.LinkOptions{Phone: phone}, p.Progress)
			stopTicks()
			if err != nil {
				return linkui.Failed(args[0], err)
			}
			p.Linked(args[0], acct, running)
			return nil
		},
	}
	cmd.Flags().StringVar(&phone, "phone", "", "link by pairing code for this phone number, in international format (+15551234567)")
	cmd.Flags().BoolVar(&light, "light", false, "draw the QR code for a light terminal background")
	return cmd
}

// every calls f every d until stop is called. stop waits for a call in
// progress, so nothing ticks, or writes, once the command has returned.
func every(d time.Duration, f func()) (stop func()) {
	t := time.NewTicker(d)
	quit, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-t.C:
				f()
			case <-quit:
				return
			}
		}
	}()
	return func() {
		t.Stop()
		close(quit)
		<-exited
	}
}

func newLinksCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "links",
		Short: "List the WhatsApp links and their state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, running, err := connectLinks(g)
			if err != nil {
				return err
			}
			defer api.Close()
			links, err := api.Links(cmd.Context())
			if err != nil {
				return err
			}
			printLinks(cmd, links, running)
			return nil
		},
	}
}

func printLinks(cmd *cobra.Command, links []bridge.LinkStatus, running bool) {
	out := cmd.OutOrStdout()
	if len(links) == 0 {
		fmt.Fprintln(out, "No links: add a connector of type whatsapp to the config.")
		return
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tACCOUNT\tSHOWN AS\tSTATE\tSINCE\tDETAIL")
	for _, l := range links {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", l.Name, dash(l.Account.ID), dash(l.Account.Name), linktext.State(l.State), since(l.Since), linkDetail(l))
	}
	tw.Flush()
	if !running {
		fmt.Fprintln(out, "(phonebridge is not running: no link relays until `phonebridge run` starts it)")
	}
}

// linkDetail is what the CLI says of a link beyond its state, with a
// ban's end in local time.
func linkDetail(l bridge.LinkStatus) string {
	detail := linktext.CLI.Detail(l)
	if !l.Until.IsZero() {
		detail = strings.TrimSpace(detail + " until " + l.Until.Local().Format(time.DateTime))
	}
	return detail
}

// since is a compact age: "3m ago", "2d ago".
func since(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := max(time.Since(t), 0) // the wall clock may have been set back
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func newUnlinkCommand(g *globalFlags) *cobra.Command {
	var local bool
	cmd := &cobra.Command{
		Use:   "unlink NAME",
		Short: "Log the link NAME out of WhatsApp and delete its keys",
		Long: `Log the link NAME out: it leaves the phone's list of linked devices and its
keys are deleted here. With --local, only the keys here are deleted (use it
when WhatsApp cannot be reached; remove the device on the phone yourself).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, _, err := connectLinks(g)
			if err != nil {
				return err
			}
			defer api.Close()
			if err := api.Unlink(cmd.Context(), args[0], local); err != nil {
				return linkui.UnlinkFailed(args[0], err)
			}
			if local {
				fmt.Fprintf(cmd.OutOrStdout(), "Forgot the keys of %s here. Remove the device on the phone too: Settings → Linked devices.\n", args[0])
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "Unlinked %s: it left the phone's linked devices and its keys are deleted.\n", args[0])
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&local, "local", false, "delete the keys here only, without telling WhatsApp")
	return cmd
}

func newChatsCommand(g *globalFlags) *cobra.Command {
	var search string
	cmd := &cobra.Command{
		Use:   "chats NAME",
		Short: "List the chats of the link NAME, to write routes",
		Long: `List the chats (contacts and groups) of the link NAME with their ids. A
route endpoint takes either: chat: "Family" or chat: 1203630…@g.us.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, running, err := connectLinks(g)
			if err != nil {
				return err
			}
			defer api.Close()
			chats, err := api.Chats(cmd.Context(), args[0], search)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(chats) == 0 {
				fmt.Fprintln(out, "No chats found.")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKIND\tID")
			for _, c := range chats {
				kind := "direct"
				if c.Group {
					kind = "group"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, kind, c.ID)
			}
			tw.Flush()
			if !running {
				fmt.Fprintln(out, "(from the names saved here; group names refresh while phonebridge runs)")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&search, "search", "", "only chats whose name or id contains TEXT (any case)")
	return cmd
}
