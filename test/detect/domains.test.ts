import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CLIENT_SERVICE_DOMAINS, DEFAULT_DOMAINS, DomainList, TORRENT_SITE_DOMAINS, TRACKER_DOMAINS } from '../../src/detect/domains.js';
import { trackerDomainDetector } from '../../src/detect/tracker-domain.js';
import { trackerHostDetector } from '../../src/detect/tracker-host.js';
import { trackerSniDetector } from '../../src/detect/tracker-sni.js';
import { scanCapture } from '../helpers/capture.js';
import { ascii } from '../helpers/frames.js';

const CORPUS = resolve(import.meta.dirname, '../../../shared/corpus/ndpi');

describe('DomainList', () => {
  const list = new DomainList(['utorrent.com', 'tracker.opentrackr.org', 't-ru.org']);
  const matches = (name: string) => list.matchDotted(ascii(name), 0, name.length);

  it.each([
    ['utorrent.com', 0],
    ['web.utorrent.com', 0],
    ['a.b.c.utorrent.com', 0],
    ['WEB.UTorrent.COM', 0],
    ['utorrent.com.', 0],
    ['tracker.opentrackr.org', 1],
    ['bt4.t-ru.org', 2],
  ])('%s is under listed domain %i', (name, id) => {
    expect(matches(name)).toBe(id);
  });

  it.each([
    'notutorrent.com',
    'utorrent.com.evil.net',
    'utorrent.co',
    'torrent.com',
    'router-utorrent.com',
    'opentrackr.org',
    'www.opentrackr.org',
    'ru.org',
    'utorrent.com..',
    '',
    '.',
    'utorrent.com\x00',
    'web utorrent.com',
    'web/utorrent.com',
  ])('%j is not listed', (name) => {
    expect(matches(name)).toBe(-1);
  });

  it('normalises entries and refuses what is not a domain name', () => {
    expect(new DomainList(['*.Example.COM', '.b.org', 'c.net.']).domains).toEqual(['example.com', 'b.org', 'c.net']);
    for (const bad of ['', 'a..b', 'exa mple.com', '-a.com', 'a-.com', 'a.com/x', 'é.com', `${'a'.repeat(64)}.com`]) {
      expect(() => new DomainList([bad]), bad).toThrow(RangeError);
    }
  });

  it('lists every default tracker and client service, and leaves the websites out of the default', () => {
    const defaults = new DomainList(DEFAULT_DOMAINS);
    for (const domain of [...TRACKER_DOMAINS, ...CLIENT_SERVICE_DOMAINS]) {
      expect(defaults.matchDotted(ascii(domain), 0, domain.length), domain).toBeGreaterThanOrEqual(0);
      expect(defaults.matchDotted(ascii(`x.${domain}`), 0, domain.length + 2), domain).toBeGreaterThanOrEqual(0);
    }
    for (const site of ['www.utorrent.com', 'utorrent.com', 'www.qbittorrent.org', 'thepiratebay.org', 'transmissionbt.com']) {
      expect(defaults.matchDotted(ascii(site), 0, site.length), site).toBe(-1);
    }
    expect(new DomainList(TORRENT_SITE_DOMAINS).matchDotted(ascii('www.utorrent.com'), 0, 16)).toBeGreaterThanOrEqual(0);
  });

  it('agrees with a label-suffix comparison on arbitrary names', () => {
    const label = fc.stringMatching(/^[a-cA-C-]{1,4}$/);
    const domain = fc.array(fc.stringMatching(/^[a-c]{1,3}$/), { minLength: 1, maxLength: 3 }).map((labels) => labels.join('.'));
    fc.assert(
      fc.property(fc.uniqueArray(domain, { minLength: 1, maxLength: 5 }), fc.array(label, { minLength: 1, maxLength: 5 }), (domains, labels) => {
        const name = labels.join('.');
        const lower = name.toLowerCase();
        const under = (d: string) => lower === d || lower.endsWith(`.${d}`);
        const longest = domains.filter(under).sort((a, b) => b.length - a.length)[0];
        expect(new DomainList(domains).matchDotted(ascii(name), 0, name.length)).toBe(longest === undefined ? -1 : domains.indexOf(longest));
      }),
    );
  });
});

describe('the name detectors on the corpus', () => {
  it.runIf(existsSync(CORPUS))('flag only tls_torrent.pcapng among its thousands of DNS, TLS and HTTP flows', () => {
    const detectors = [trackerDomainDetector, trackerSniDetector, trackerHostDetector];
    const flagged: string[] = [];
    for (const file of readdirSync(CORPUS).filter((f) => /\.(pcap|pcapng|cap)$/.test(f))) {
      for (const f of scanCapture(join(CORPUS, file), { detectors }).flows) if (f.bittorrent) flagged.push(`${file} ${f.rule} ${f.responder}`);
    }
    expect(flagged).toEqual(['tls_torrent.pcapng tracker-sni 10.10.10.1:443']);
  });
});
