package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/octohelm/crpe/internal/agentclient"
	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/auth"
	"github.com/octohelm/crpe/internal/importer"
	"github.com/octohelm/crpe/internal/parts"
	"github.com/octohelm/crpe/internal/storage"
)

func newImportCmd(g *globals) *cobra.Command {
	var (
		data, to, token, tokenFile, namespace string
		force, full, asJSON                   bool
		keep                                  int
		reg                                   registryFlags
		vf                                    verifyFlags
	)
	cmd := &cobra.Command{
		Use:   "import FILE | PARTS...",
		Short: "Import a kubepkg.tgz into a data folder, or hand it to an agent",
		Long: `crpe import takes a kubepkg.tgz. With --data it imports into a local data
folder (no server). With --to it hands the archive to a running agent: it
first asks which layers the agent lacks and sends only those (the archive then
says octohelm.tech/partial); a broken upload is retried with a fresh delta, so
what the agent already committed is not sent again.

The agent verifies every blob, checks every image is complete for its
platforms, and publishes everything at once. A version lower than the one
imported is refused (409) unless --force.

A split archive (crpe export --split) is taken from its parts file, its first
part, or all its parts (from several folders or media if need be), and
streamed as one archive: a missing part or one of the wrong size is refused
before the first byte is read; a corrupt or misplaced part is found by its
digest at its end, and the import fails, naming the part, with nothing
published.

With --to-registry HOST[/PREFIX] it pushes the archive into a site
registry (Harbor, distribution, zot, a cloud registry) instead of an agent:
every blob, manifest and index with its digest unchanged, into
PREFIX/docker.io/library/nginx (or, with --flatten, for registries that
limit path depth, PREFIX/docker.io_library_nginx). Blobs the registry has are
skipped, a blob shared by images is pushed once and mounted into the other
repositories, big layers go in chunks that resume after a broken connection,
and tags are set last, once every image of the archive is complete in the
registry: a failure moves no tag, and a rerun sends only what is missing.
Credentials come from --username/--password or --token, else from Docker's
config.json and credential helpers. Then point the nodes at it with
crpe mirror-config --registry HOST/PREFIX.`,
		Example: `  crpe import demo-1.0.0.kubepkg.tgz --to http://agent.lan:36060 --token-file /etc/crpe/token
  crpe import demo-1.0.0.kubepkg.tgz --data /var/lib/crpe
  crpe import demo-0.9.0.kubepkg.tgz --to https://agent.lan:36060 --token "$TOKEN" --force
  crpe import /media/usb/demo-1.0.0.kubepkg.tgz.parts --to http://agent.lan:36060 --token-file /etc/crpe/token
  crpe import /media/a/demo.kubepkg.tgz.000 /media/b/demo.kubepkg.tgz.001 --data /var/lib/crpe
  crpe import demo-1.0.0.kubepkg.tgz --to-registry harbor.lan/crpe --ca-file /etc/ssl/site-ca.pem
  CRPE_PASSWORD=... crpe import demo.kubepkg.tgz --to-registry reg.lan:5000/mirror --username ci --json
  crpe import demo.kubepkg.tgz --to-registry quay.lan/crpe --flatten --token "$REGISTRY_TOKEN"`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			n := 0
			for _, s := range []string{to, data, reg.target} {
				if s != "" {
					n++
				}
			}
			if n != 1 {
				return errors.New("give exactly one of --to URL (an agent), --to-registry HOST[/PREFIX] (a site registry) or --data DIR (a local data folder)")
			}
			// one archive, or the parts of a split one: missing parts and
			// parts of the wrong size are refused here, before any byte
			set, err := parts.Resolve(args...)
			if err != nil {
				return err
			}
			file := set.Name
			if !set.Split() {
				file = set.Paths[0]
			}
			out := cmd.OutOrStdout()
			verify, err := vf.policy()
			if err != nil {
				return err
			}
			if verify != nil && to != "" {
				return errors.New("--verify-key and --verify-policy check an import into --data or --to-registry; an agent (--to) checks with its own")
			}
			if reg.target != "" {
				return importToRegistry(cmd, set, file, &reg, token, tokenFile, asJSON, verify)
			}
			if data != "" {
				st, err := storage.Open(ctx, data, g.log, nil)
				if err != nil {
					return err
				}
				defer st.Close()
				f, err := set.Open()
				if err != nil {
					return err
				}
				defer f.Close()
				imp := importer.New(st.Store, st.DB, importer.Options{Namespace: namespace, KeepVersions: keep, Dir: data, Verify: verify})
				r, done := readBar(cmd, asJSON, "import", set.Size, f)
				res, err := imp.Import(ctx, r, importer.ImportOptions{Force: force})
				done()
				if err != nil {
					if pr, ok := f.(*parts.Reader); ok {
						// the part at fault, else the part the error arose in
						if pe := pr.Fault(err); pe != nil {
							return fmt.Errorf("%s: %w", file, pe)
						}
						if name := pr.Part(); name != "" {
							return importErr(file+": part "+name, err)
						}
					}
					return importErr(file, err)
				}
				if res.Expired != nil {
					if _, err := imp.GC(ctx, 0); err != nil {
						return err
					}
				}
				return printImport(out, asJSON, res, nil, nil)
			}
			tok := token
			if tok == "" && tokenFile != "" {
				toks, err := auth.LoadTokens(tokenFile)
				if err != nil {
					return err
				}
				tok = toks.First()
			}
			c := &agentclient.Client{URL: to, Token: tok}
			o := agentclient.SendOptions{Force: force, Full: full}
			var p *mpb.Progress
			if isTerminal(cmd.ErrOrStderr()) && !asJSON {
				p = mpb.New(mpb.WithOutput(cmd.ErrOrStderr()), mpb.WithWidth(40))
				bar := p.AddBar(0, mpb.PrependDecorators(decor.Name("send", decor.WCSyncSpaceR), decor.Current(decor.SizeB1024(0), "% .1f")),
					mpb.AppendDecorators(decor.AverageSpeed(decor.SizeB1024(0), "% .1f")))
				var last int64
				o.Progress = func(n int64) { bar.IncrInt64(n - last); last = n }
				defer func() { bar.SetTotal(-1, true); p.Wait() }()
			}
			var last io.ReadCloser // the latest reading of the archive, for Fault
			res, err := c.Send(ctx, func() (io.ReadCloser, error) {
				r, err := set.Open()
				last = r
				return r, err
			}, o)
			if err != nil {
				var ae *agentclient.Error
				var ee *archive.EntryError
				var pe *parts.Error
				switch {
				case errors.As(err, &pe):
					// a part refused as it was read
					return fmt.Errorf("%s: %w", file, pe)
				case errors.As(err, &ae) && ae.Code != "IMPORT_INVALID":
					return importErr(file, err)
				case ae == nil && !errors.As(err, &ee):
					// not the agent's answer nor a bad archive: the agent
					// could not be reached, or the file read
					return fmt.Errorf("%s: %w", file, err)
				}
				// the archive is bad: is the part being sent corrupt?
				// (those before it were verified as they were read)
				if pr, ok := last.(*parts.Reader); ok {
					if pe := pr.Fault(err); pe != nil {
						return fmt.Errorf("%s: %w", file, pe)
					}
				}
				return importErr(file, err)
			}
			var ir struct {
				importer.Result
				KubePkgObjects map[string]string `json:"kubepkgObjects"`
			}
			_ = json.Unmarshal(res.Import, &ir)
			if err := printImport(out, asJSON, &ir.Result, res, ir.KubePkgObjects); err != nil {
				return err
			}
			var failed []string
			for k, v := range ir.KubePkgObjects {
				if strings.HasPrefix(v, "error") {
					failed = append(failed, k+": "+v)
				}
			}
			if len(failed) > 0 {
				return &exitError{code: 1, msg: "imported, but the agent could not write these KubePkg objects: " + strings.Join(failed, "; ")}
			}
			return nil
		},
	}
	f := cmd.Flags()
	vf.register(cmd)
	f.StringVar(&data, "data", "", "import into this local data folder")
	f.StringVar(&to, "to", "", "hand the archive to the agent at this URL")
	f.StringVar(&token, "token", "", "the agent's token (with --to-registry: the registry's bearer token)")
	f.StringVar(&tokenFile, "token-file", "", "file holding the agent's token (with --to-registry: the registry's)")
	f.BoolVar(&force, "force", false, "import even a lower version than the one imported")
	f.BoolVar(&full, "full", false, "send every blob (no delta)")
	f.StringVar(&namespace, "namespace", "default", "namespace of packages whose metadata names none (with --data)")
	f.IntVar(&keep, "keep-versions", 3, "versions of each package kept (with --data)")
	f.BoolVar(&asJSON, "json", false, "print the summary as JSON")
	reg.add(f)
	return cmd
}

func importErr(file string, err error) error {
	var ae *agentclient.Error
	if errors.As(err, &ae) {
		return fmt.Errorf("%s: refused by the agent (%d %s): %s", file, ae.Status, ae.Code, ae.Message)
	}
	e := importer.AsError(err)
	return fmt.Errorf("%s: %s (%s)", file, e.Error(), e.Code)
}

func printImport(out io.Writer, asJSON bool, res *importer.Result, sent *agentclient.SendResult, objects map[string]string) error {
	if asJSON {
		v := map[string]any{"import": struct {
			*importer.Result
			KubePkgObjects map[string]string `json:"kubepkgObjects,omitempty"`
		}{res, objects}}
		if sent != nil {
			v["bytesSent"], v["blobsOmitted"], v["bytesOmitted"], v["attempts"] = sent.BytesSent, sent.BlobsOmitted, sent.BytesOmitted, sent.Attempts
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	var names []string
	for _, p := range res.Packages {
		s := p.Namespace + "/" + p.Name + "@" + p.Version
		switch {
		case p.Unchanged:
			s += " (unchanged)"
		case p.Previous != "":
			s += " (was " + p.Previous + ")"
		}
		names = append(names, s)
	}
	fmt.Fprintf(out, "imported %s: %d images, %d blobs received (%s), %d already present (%s)\n",
		strings.Join(names, ", "), len(res.Images), res.BlobsReceived, humanBytes(res.BytesReceived), res.BlobsPresent, humanBytes(res.BytesPresent))
	if sent != nil {
		fmt.Fprintf(out, "sent %s; left out %d layers the agent had (%s)\n", humanBytes(sent.BytesSent), sent.BlobsOmitted, humanBytes(sent.BytesOmitted))
	}
	keys := make([]string, 0, len(objects))
	for k := range objects {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(out, "KubePkg %s: %s\n", k, objects[k])
	}
	return nil
}
