import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isWithinZone, parseDomainName } from '../../common/domain-name.js';
import { isHangarError } from '../../common/errors.js';

function refused(input: string, pattern: RegExp): void {
  assert.throws(
    () => parseDomainName(input),
    (err: unknown) => isHangarError(err, 'BAD_INPUT') && pattern.test(err.message),
    `${input} should be refused`,
  );
}

describe('custom domain names', () => {
  it('are lower-cased, trimmed, without a trailing dot, internationalised names in ASCII', () => {
    assert.equal(parseDomainName('  WWW.Shop.COM. '), 'www.shop.com');
    assert.equal(parseDomainName('shop.com'), 'shop.com');
    assert.equal(parseDomainName('a-b.c-d.example'), 'a-b.c-d.example');
    assert.equal(parseDomainName('bücher.example'), 'xn--bcher-kva.example');
  });

  it('refuse IP literals, ports, schemes, wildcards, single labels and bad labels, each with a reason', () => {
    refused('10.0.0.1', /IP address/);
    refused('::1', /IP address/);
    refused('[2001:db8::1]', /IP address/);
    refused('1.2.3', /number/);
    refused('https://www.shop.com', /without a scheme/);
    refused('www.shop.com:443', /without a scheme, port/);
    refused('*.shop.com', /wildcard/);
    refused('localhost', /single label/);
    refused('-shop.com', /label "-shop"/);
    refused('shop..com', /label ""/);
    refused('sh_op.com', /label "sh_op"/);
    refused(`${'a'.repeat(64)}.com`, /label/);
    refused(`${'a.'.repeat(130)}com`, /longer than 253/);
    refused('', /empty/);
  });

  it('know what lies within a zone', () => {
    assert.equal(isWithinZone('shop.example.com', 'example.com'), true);
    assert.equal(isWithinZone('example.com', 'example.com'), true);
    assert.equal(isWithinZone('a.b.example.com', 'Example.com.'), true);
    assert.equal(isWithinZone('notexample.com', 'example.com'), false);
  });
});
