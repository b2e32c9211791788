/*
 * SHA-256 against the FIPS 180-4 examples (NIST's "SHA256.pdf" and
 * "SHA2_Additional.pdf" vectors): the empty message, "abc", the two-block
 * 448-bit message, one million 'a's, and lengths around the padding
 * boundary; the same digests fed in pieces of every size.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/sha256.h"
#include "tests/support/check.h"

static void digest_of(const void *data, size_t len, size_t piece, char hex[SHOAL_SHA256_HEX])
{
    shoal_sha256_t c;
    unsigned char d[SHOAL_SHA256_LEN];
    const unsigned char *p = data;

    shoal_sha256_init(&c);
    if (piece == 0) {
        shoal_sha256_update(&c, data, len);
    } else {
        for (size_t off = 0; off < len; off += piece)
            shoal_sha256_update(&c, p + off, len - off < piece ? len - off : piece);
    }
    shoal_sha256_final(&c, d);
    shoal_sha256_hex(d, hex);
}

static void check(const char *msg, size_t len, const char *want)
{
    static const size_t pieces[] = {0, 1, 3, 7, 55, 56, 63, 64, 65, 127};
    char hex[SHOAL_SHA256_HEX];

    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        digest_of(msg, len, pieces[i], hex);
        assert_str_eq(hex, want);
    }
}

int main(void)
{
    check("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    check("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check(two, strlen(two), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *four =
        "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklm"
        "nopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    check(four, strlen(four), "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
    /* SHA2_Additional: 0xbd, and 55, 56 and 1000 bytes around the padding */
    check("\xbd", 1, "68325720aabd7c82f30f554b313d0570c95accbb7dc4b5aae11204c08ffe732b");
    char buf[1005];
    memset(buf, 0, sizeof(buf));
    check(buf, 55, "02779466cdec163811d078815c633f21901413081449002f24aa3e80f0b88ef7");
    check(buf, 56, "d4817aa5497628e7c77e6b606107042bbba3130888c5f47a375e6179be789fbb");
    check(buf, 57, "65a16cb7861335d5ace3c60718b5052e44660726da4cd13bb745381b235a1785");
    check(buf, 64, "f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b");
    memset(buf, 'A', 1000);
    check(buf, 1000, "c2e686823489ced2017f6059b8b239318b6364f6dcd835d0a519105a1eadd6e4");
    memset(buf, 'U', 1005);
    check(buf, 1005, "f4d62ddec0f3dd90ea1380fa16a5ff8dc4c54b21740650f24afc4120903552b0");
    size_t million = 1000000;
    char *a = malloc(million);
    assert_true(a != NULL);
    memset(a, 'a', million);
    char hex[SHOAL_SHA256_HEX];
    digest_of(a, million, 0, hex);
    assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    digest_of(a, million, 4099, hex);
    assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
    printf("sha256_test: ok\n");
    return 0;
}
