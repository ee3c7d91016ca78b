// The resize of spec §2.1 step 4 is PIL's: qwen_vl_utils and transformers' Qwen2-VL image processor both call
// PIL.Image.resize(..., BICUBIC) on the 8-bit RGB image (reducing_gap None). The expected bytes below were made with
// Pillow 12.3 from the same synthetic pattern (Image.fromarray(pattern).resize((w, h), Image.BICUBIC)), so the vision
// tower sees the pixels the reference sees. smart_resize changes almost every image's size by a few pixels, up in
// one side or both, so the enlarging case is the common one.
import { createHash } from 'node:crypto';
import { crc32, deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { normalize, patchify, preprocessImage, resizeBicubic } from '../../../../worker/pipeline/image.ts';

/** A deterministic high-frequency RGB pattern, HWC uint8 (the same formula made the Pillow fixtures). */
function pattern(w: number, h: number): Uint8Array {
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) out[(y * w + x) * 3 + c] = (x * 37 + y * 91 + c * 53 + ((x * y) % 7) * 29) % 256;
  return out;
}
const sha = (a: Uint8Array) => createHash('sha256').update(a).digest('hex');

/** Pillow's 33×19 → 28×28 (width shrinks, height grows). */
const PIL_33x19_TO_28x28 = Buffer.from('ADJqJV+hV5bKi7//tuxWzSc/AjRwK2anXpzhkcU+vewVxyJMAzt2MW2tZaLllswyw+gdvx9QA0J9NnSzbKjnm9Iny+MmtB5WBkeEPHu5c63poNQeLmmTfYJMcFaTXKDiptxF3SlGNW6RhYBRbV6jZKeHrtwi2SZVN3iPjH1WaWWqbK6Dt+cj0yZfOoKOk3pcZ22wdLZ/wOMkyidqP4qMmXdjZXa3fLl+cbCYrpYdkyRoRHW4m9c9wz5YdrWTt5AjiyltS37Jo9g5wz9keL6MwIgpgy1yUonPq7QywkByfMaIx4AyejR4WpLUs7Atv0d+f82Bz3g6dDqAYZjcndMvMWuVrFWSi1Wcq/ZXTXFzl802N3KgtE6MiWSosPlRUXR3lMo5QHqrvEaFh3iysiZOV3V4j8ZESYG9wkF/h4K7syNNYIR4icBLU4nHxzt6g4/IWo1ZQojUeIBhg4Z5t39lTX2qXJFkQInYhoVbfoiFwIJkSoGsYZVtP4valYlVeoyQxhtlSIK0Zpg7Po19o41Zd4uayh1oSIqzapw7P46JsJFVcY+nJl2lX4LCZoRFYK5+uxVjeJKfLWeuXXy+cZNGXaWHxxhjcJikNXK2XHa5faRIW5yO0SxlaJ2zPnpqWnEwh7NXWpSU2TNoYZ65R4NjWGw5kcJZVpCdT47MQSNYsk57Q5TCsBhRo8MiTI/KUB9VrlyIRJHBvBtMoc8uR5HMYB1Sq2mVR46/xiFHn9g9Qo3GcBtIp3ijS4q9zylCnt5MPonEfxtJooSvS4q9od17Vnmyg365J3CqxCBW4WInnNyCZHi0jIPAKG2n1CNV4Vcsl1SLbYG1ionGKmuk4iZT4VoxkVuZdoK+iI/MLmih7ypS4F03lGOjiIS+hJTSLmifp9NNmpPWZIS9DVGFmTFmvSJUrdNYhZXaQYW9ElCFpzNpvRBUsC1jgqXeQoq+FE+EtDZsvRBUszlwfqjhQ4q/GE6DwDduwRBUmkZ9WqvkSIu/GU6DQFSC/SpmijdvAEB1GUd8HVCEWlSDqSxoADpyDER5HEp/H1OIa06FnjNrAEF2EEZ7IU6DIFeMfU6FkTdvAER5FEp/JFGGLluQH06GATpyDEh8F02CYJi92K8a0nFIOCx0E1+TOX24bpu2u7Ubn2hONTJ5GWOYPYS/ebKvu2EdoQhVLkN+IGicQInGhbamulkhog1bKEmDJ2yhSY/OZrmdhVEmqRRhI0+Hmo+ofNUuz65KijZWLVuUYJDSmZWjid4y4aZLgThdMWObaZXYmqWej4I85ztMeUZlNWmicpjcm6yXl3tB7EFOcUhrOnGpepvgpLKPqHRH70hQbEpyvRRII2Cher9w014iTD+BZYvBthtPKGmqgsZm2FQrREqKc4rArx5TLXC1istc3Ew0P1WTgoe9qCNYM3i8ktBS30Q9OmGckIK4nyhcO4DDm9VK5T1GYVKIkIXKmGx5vkVfZE2Me8JNZVyRmYLHlnZ8yD5gXVqSgsFUZmJiooNFkoSM0TZhWGiWh75aampuq39MkIyP2TBjVneZi7lgbXJrtHtVj5WS5SxiQZbLl4m9kl+imGZvdHqaqp0rRpvPooa6i2WqpGdrcYCgrZ81SJ+droM5g2u8r2hncYalrqIrS6RYuYBHfXDCuWllc42nraUwUKhVxH1Td3bHxmpfeKvgLGKXYpfcg7lAerKi0StpdabbNmyhYJXajsQ9e6qs1zJvbaTaQHatX5TWl887fqK53DxDZaEdS4LHXZLSoNk7gprA30g8Xp0nVo3TXZHMq+E3zlGGSqbbgGOqxKsiaKuUWDp/yliNSqzhil+mxrohZaShYzp9zmGYV7Dqk1yfx8giYZ2tcDxsymprV7Pxnlqbx9YkXpa2fT5nyHN4Wbf0qFiUyeMjtj17pYO4tyJizYpPZaqyLWWquUSCpIW6wCBgyptWYqa6OWSoo0yJY4W60B9dx6teX6PKQ2OpolWfaYW42yBcw7lmXKDQT2GooF2mcIS34yFawcd1XXWi+Sle3gg8oHewc7XsWpfEaXOi/ypf3wo/noa/dbXsY5nGKnGgXytg7w1CnJTOeLXkZZvHJ2+ecixh8BBFmqHberbkZp3KJGychS1i7xVKmq3ghMY+m43ImY3CjKzkicD/iNE7h8VIno/Nm5DFj7Lri8P/j9Uzh8VVd5HSoZTIkLj3j8dKlNkqh8Nif5TWo5fLk73/kcpFmN0thsJwhpfZppvVlcJRvZMzQpHUZLXphsH7n9S8upAVuZQ+Q5Xbabnti8X+pNa3sJASYpdMWJvhbr3ykMn/qtgcsJIMY5pbXKDnc8L7lM2mrtgKrpQRZJxqX6Xsecb/mM8M1jNuJ16HVYG3e7L0rORG4Bw8zzVyKWONWoe9grj3teQ8xRdFAz12OmiTX47EiL/4vOA8vRRNBER7QG2ZZJTVjcYsxNsgshRXB0uAR3KfaprXksgtcICio40XeCxtPYjJmM4z4SNHdYicq4YccDR2Ro/Noc8q2iFVTZOWtn4hZzx/T5fQqs0o1SJkUp6RvXYmX0WKWJ+ntMkeziVyWKiJw20uWU+SYqOvcr1qfIE+mixxV1+nmuE/j0tbc71ohX9HlyxzW2uvoeM4kk1kgcJmjX1PlCtzX3i2puM0lFFugsVklnpYkS10ZIXKrN8yl1h1gcdhn3hiji53aI3UjsMlHWWrn16HjFWLqdpXOHV7iL0uI2y2qlh/iGKXr91SO3l+hro0KnXAtVJ3hXCisd1QQH9+grY8MHzIv01xg32rstxRSId9fbFFOYXRx0hqfYe4LWV2R5HXW4ZDbppqtT5hWXizOG2CTo7WaZA/aZV2wEFiUny2QXWLSovTeJw7ZpGAyEZkTH+4Sn6VRYjQh6c4Y4yKzkpoR4G4U4ehQYXLlbE2XYqWSWyusFiUdWpWTJ2TsQ1Wh51mNXKzVFOQgXlcS5eXvRBUgaVuOHW5WU+Mh4hiS5CayBVUfKt3PHi9XkuIjJdpTIid0BxTd65/QH3CY0iEj6VwSYaig5PI/xNIpEOANojEqRJJp78LTpLFShFFr1COOYfCtRVDpcoXR4zGXA9DqV2cPIS/vxo+pdQmQYbFbg5Co2urQIC7yCI4pNo2O4HDfw5CnHe4QoG5', 'base64');

const G = { patchSize: 14, temporalPatchSize: 2, mergeSize: 2 };
const LIMITS = { minPixels: 784, maxPixels: 1_000_000, maxInputPixels: 10_000_000, maxAspectRatio: 200 };

describe('bicubic resize as PIL does it (spec §2.1 step 4)', () => {
  it('preprocessImage feeds the vision tower the pixels of PIL bicubic (33×19 → smart_resize 28×28)', async () => {
    const png = await sharp(Buffer.from(pattern(33, 19)), { raw: { width: 33, height: 19, channels: 3 } }).png().toBuffer();
    const got = await preprocessImage(new Uint8Array(png), LIMITS, G);
    expect([got.width, got.height]).toEqual([28, 28]);
    const want = patchify(normalize(new Uint8Array(PIL_33x19_TO_28x28), 28, 28), 28, 28, G).pixelValues;
    expect(Array.from(got.pixelValues)).toEqual(Array.from(want));
  });

  it.each([
    [33, 19, 28, 28, '80ae6008b0a8c160596b5bf1ec6bdf3e6e52efc72ef90147687bee9879fd701a'], // one side up, one down
    [120, 90, 28, 28, 'c3a20904d73a6911526f82b37f516a7eb9a1869618f80d6a7065a67df32dac03'], // strong shrink: widened support
    [40, 30, 56, 84, 'f39fa48d1aa6c7b03df7d53ba5ebbbc3918301f8d0021e1ccd81637ab8d1bb19'], // both sides up
  ])("resizeBicubic %s×%s → %s×%s gives Pillow's bytes", (w, h, ow, oh, hash) => {
    expect(sha(resizeBicubic(pattern(w, h), w, h, ow, oh))).toBe(hash);
  });

  it('keeps an image whose size does not change byte for byte', () => {
    const src = pattern(28, 56);
    expect(Array.from(resizeBicubic(src, 28, 56, 28, 56))).toEqual(Array.from(src));
  });

  it('gives a new array even when the size does not change: writing to it leaves the input alone', () => {
    const src = pattern(28, 28);
    const out = resizeBicubic(src, 28, 28, 28, 28);
    expect(out).not.toBe(src);
    out[0] = (src[0]! + 1) % 256;
    expect(src).toEqual(pattern(28, 28));
  });
});

/** `png` with an iCCP chunk (the embedded ICC profile `icc`, zlib-compressed) right after IHDR (PNG 1.2 §11.3.3.3). */
function withIccChunk(png: Buffer, icc: Buffer): Buffer {
  const data = Buffer.concat([Buffer.from('ICC profile\0\0', 'latin1'), deflateSync(icc)]);
  const typed = Buffer.concat([Buffer.from('iCCP', 'latin1'), data]);
  const chunk = Buffer.alloc(4 + typed.length + 4);
  chunk.writeUInt32BE(data.length, 0);
  typed.copy(chunk, 4);
  chunk.writeUInt32BE(crc32(typed) >>> 0, 4 + typed.length);
  const ihdrEnd = 8 + 8 + png.readUInt32BE(8) + 4;
  return Buffer.concat([png.subarray(0, ihdrEnd), chunk, png.subarray(ihdrEnd)]);
}

describe('embedded colour profiles (spec §2.1 step 1: PIL convert("RGB"), no colour management)', () => {
  it('feeds the stored pixel values of a Display P3 image, as PIL does, not a conversion to sRGB', async () => {
    // libvips' built-in Display P3 profile, read back from an image sharp tagged with it
    const p3 = (await sharp({ create: { width: 1, height: 1, channels: 3, background: '#808080' } }).withIccProfile('p3').png().toBuffer().then((b) => sharp(b).metadata())).icc!;
    const pixels = pattern(28, 28);
    const png = withIccChunk(await sharp(Buffer.from(pixels), { raw: { width: 28, height: 28, channels: 3 } }).png().toBuffer(), p3);
    expect((await sharp(png).metadata()).icc?.length).toBe(p3.length); // the profile is really embedded
    const got = await preprocessImage(new Uint8Array(png), LIMITS, G);
    const want = patchify(normalize(pixels, 28, 28), 28, 28, G).pixelValues;
    expect(Array.from(got.pixelValues)).toEqual(Array.from(want));
  });
});
