package registrypush

import "testing"

func TestRepositoryNames(t *testing.T) {
	cases := []struct {
		target, src string
		n           Naming
		want        string
	}{
		{"reg.lan", "docker.io/library/nginx", Nested, "docker.io/library/nginx"},
		{"reg.lan/site", "docker.io/library/nginx", Nested, "site/docker.io/library/nginx"},
		{"reg.lan:5000/a/b", "ghcr.io/octohelm/app", Nested, "a/b/ghcr.io/octohelm/app"},
		{"reg.lan/site", "docker.io/library/nginx", Flat, "site/docker.io_library_nginx"},
		{"reg.lan", "10.0.0.1:5000/team/app", Nested, "10.0.0.1_5000/team/app"},
		{"reg.lan/p", "10.0.0.1:5000/team/app", Flat, "p/10.0.0.1_5000_team_app"},
	}
	for _, c := range cases {
		tg, err := ParseTarget(c.target)
		if err != nil {
			t.Fatalf("%s: %v", c.target, err)
		}
		got, err := tg.Repository(c.src, c.n)
		if err != nil || got != c.want {
			t.Errorf("%s %s (%d) = %q, %v; want %q", c.target, c.src, c.n, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "https://reg.lan", "reg.lan/Site", "reg.lan/a//b", "reg.lan/-x"} {
		if tg, err := ParseTarget(bad); err == nil {
			t.Errorf("ParseTarget(%q) = %+v, want an error", bad, tg)
		}
	}
	if _, err := (Target{Host: "r"}).Repository("nginx", Nested); err == nil {
		t.Error("a repository without a host was taken")
	}
}
