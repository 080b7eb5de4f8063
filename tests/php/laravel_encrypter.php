<?php
// Laravel's Illuminate\Encryption\Encrypter (cipher aes-256-cbc), encryptString
// and decryptString, as plain PHP: the reference tests/test_encryption.py checks
// cmis_repo.encryption against, both ways.
//
// Reads one JSON request on stdin:
//   {"op": "encrypt" | "decrypt", "key": "base64:…", "previous_keys": ["base64:…"],
//    "values": ["…", …]}
// and writes one JSON array on stdout, one result per value, in order:
//   {"ok": true, "result": "…"} or {"ok": false, "error": "The MAC is invalid."}
// Exit status 0 when the request was understood, 2 otherwise.

declare(strict_types=1);

const CIPHER = 'aes-256-cbc';
const KEY_SIZE = 32;

final class DecryptException extends RuntimeException
{
}

// Illuminate\Encryption\EncryptionServiceProvider::parseKey
function parse_key(string $key): string
{
    if (str_starts_with($key, 'base64:')) {
        $key = base64_decode(substr($key, strlen('base64:')));
    }
    // Encrypter::supported uses mb_strlen($key, '8bit'): the byte length, as strlen.
    if (strlen($key) !== KEY_SIZE) {
        throw new RuntimeException('Unsupported cipher or incorrect key length.');
    }
    return $key;
}

// Encrypter::hash
function mac_of(string $iv, string $value, string $key): string
{
    return hash_hmac('sha256', $iv.$value, $key);
}

// Encrypter::encrypt($value, false), i.e. encryptString
function encrypt_string(string $value, string $key): string
{
    $iv = random_bytes(openssl_cipher_iv_length(CIPHER));
    $value = \openssl_encrypt($value, CIPHER, $key, 0, $iv, $tag);
    if ($value === false) {
        throw new RuntimeException('Could not encrypt the data.');
    }
    $iv = base64_encode($iv);
    $tag = base64_encode($tag ?? '');
    $mac = mac_of($iv, $value, $key);
    $json = json_encode(compact('iv', 'value', 'mac', 'tag'), JSON_UNESCAPED_SLASHES);
    if (json_last_error() !== JSON_ERROR_NONE) {
        throw new RuntimeException('Could not encrypt the data.');
    }
    return base64_encode($json);
}

// Encrypter::validPayload
function valid_payload($payload): bool
{
    if (!is_array($payload)) {
        return false;
    }
    foreach (['iv', 'value', 'mac'] as $item) {
        if (!isset($payload[$item]) || !is_string($payload[$item])) {
            return false;
        }
    }
    if (isset($payload['tag']) && !is_string($payload['tag'])) {
        return false;
    }
    return strlen((string) base64_decode($payload['iv'], true)) === openssl_cipher_iv_length(CIPHER);
}

// Encrypter::getJsonPayload
function json_payload(string $payload): array
{
    $payload = json_decode(base64_decode($payload), true);
    if (!valid_payload($payload)) {
        throw new DecryptException('The payload is invalid.');
    }
    return $payload;
}

// Encrypter::decrypt($payload, false), i.e. decryptString, with previous keys
function decrypt_string(string $payload, array $keys): string
{
    $payload = json_payload($payload);
    $iv = base64_decode($payload['iv']);
    $tag = empty($payload['tag']) ? null : base64_decode($payload['tag']);
    // Encrypter::ensureTagIsValid: aes-256-cbc is not an AEAD cipher.
    if (is_string($tag)) {
        throw new DecryptException('Unable to use tag because the cipher algorithm does not support AEAD.');
    }
    $foundValidMac = false;
    foreach ($keys as $key) {
        if (!($foundValidMac = $foundValidMac || hash_equals(mac_of($payload['iv'], $payload['value'], $key), $payload['mac']))) {
            continue;
        }
        $decrypted = \openssl_decrypt($payload['value'], CIPHER, $key, 0, $iv, $tag ?? '');
        if ($decrypted !== false) {
            break;
        }
    }
    if (!$foundValidMac) {
        throw new DecryptException('The MAC is invalid.');
    }
    if (($decrypted ?? false) === false) {
        throw new DecryptException('Could not decrypt the data.');
    }
    return $decrypted;
}

$request = json_decode((string) stream_get_contents(STDIN), true, 512, JSON_THROW_ON_ERROR);
if (!is_array($request) || !in_array($request['op'] ?? null, ['encrypt', 'decrypt'], true)
    || !is_string($request['key'] ?? null) || !is_array($request['values'] ?? null)) {
    fwrite(STDERR, "bad request: need op (encrypt|decrypt), key, values\n");
    exit(2);
}
$key = parse_key($request['key']);
$keys = array_merge([$key], array_map('parse_key', $request['previous_keys'] ?? []));

$results = [];
foreach ($request['values'] as $value) {
    try {
        $result = $request['op'] === 'encrypt'
            ? encrypt_string($value, $key)
            : decrypt_string($value, $keys);
        $results[] = ['ok' => true, 'result' => $result];
    } catch (DecryptException $e) {
        $results[] = ['ok' => false, 'error' => $e->getMessage()];
    }
}
// A decrypted string that is not UTF-8 (PHP strings are bytes) comes out with U+FFFD.
$flags = JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE;
echo json_encode($results, $flags | JSON_THROW_ON_ERROR), "\n";
